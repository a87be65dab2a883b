"""The 50 ESC-50 classes (index = the dataset's `target`) and their 5 categories."""

from __future__ import annotations

# ESC-50 orders its targets in five blocks of ten, one block per category.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "Animals": (
        "dog", "rooster", "pig", "cow", "frog",
        "cat", "hen", "insects", "sheep", "crow",
    ),
    "Natural soundscapes & water sounds": (
        "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds",
        "water_drops", "wind", "pouring_water", "toilet_flush", "thunderstorm",
    ),
    "Human, non-speech sounds": (
        "crying_baby", "sneezing", "clapping", "breathing", "coughing",
        "footsteps", "laughing", "brushing_teeth", "snoring", "drinking_sipping",
    ),
    "Interior/domestic sounds": (
        "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
        "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    ),
    "Exterior/urban noises": (
        "helicopter", "chainsaw", "siren", "car_horn", "engine",
        "train", "church_bells", "airplane", "fireworks", "hand_saw",
    ),
}

CLASSES: tuple[str, ...] = tuple(name for names in CATEGORIES.values() for name in names)
NUM_CLASSES = len(CLASSES)
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
_CATEGORY_OF: dict[str, str] = {
    name: category for category, names in CATEGORIES.items() for name in names
}


def category_of(class_name: str) -> str:
    """ESC-50 category of a class name ("dog" -> "Animals"); "unknown" for other names."""
    return _CATEGORY_OF.get(class_name, "unknown")


def is_esc50(class_name: str) -> bool:
    """Whether a class name is one of ESC-50's (only those have a category to show)."""
    return class_name in _CATEGORY_OF


def pretty(class_name: str) -> str:
    """Display form of a class name: "sea_waves" -> "Sea waves", "MotorA_idle" -> "MotorA idle"."""
    text = class_name.replace("_", " ")
    return text[:1].upper() + text[1:]
