"""Who may open the team dashboard: the login configuration and the allowlist (no Streamlit here).

    auth_problem(secrets)        None when `secrets` (a parsed secrets.toml) has a usable [auth] section,
                                 else what is missing, in words
    Allowlist.from_settings(s)   AUDIO_CNN_ALLOWED_EMAILS / AUDIO_CNN_ALLOWED_DOMAINS
    Allowlist.decide(claims)     an Admission: allowed or not, and the message a refused user sees

Login itself is Streamlit's (`st.login` over OpenID Connect, `[auth]` in
Streamlit's own secrets.toml format); this module only decides. An address
counts only when the provider says it is verified (`email_verified`, when the
provider sends that claim): an unverified address could be anyone's.
An empty allowlist admits nobody: a login that any account of a public
provider (Google, Microsoft) passes is not access control.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What Streamlit's st.login needs in [auth] (one provider in [auth] itself, or named [auth.<provider>]).
AUTH_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
# An address as the allowlist and the screen take it: no spaces, markup or brackets (a claim is hostile input).
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'+/=?^{|}~-]+@[A-Za-z0-9.-]+")


def auth_problem(secrets: Mapping[str, Any] | None) -> str | None:
    """None when `secrets` holds an [auth] section st.login can use, else what is missing (for humans)."""
    auth = (secrets or {}).get("auth")
    if not isinstance(auth, Mapping) or not auth:
        return "there is no [auth] section (Streamlit's OpenID Connect login settings)"
    missing = [key for key in AUTH_KEYS if not str(auth.get(key) or "").strip()]
    if missing:
        return f"[auth] lacks {', '.join(missing)}"
    if not str(auth["redirect_uri"]).rstrip("/").endswith("/oauth2callback"):
        return "[auth] redirect_uri must be the dashboard's URL ending in /oauth2callback"
    providers = [auth] + [v for v in auth.values() if isinstance(v, Mapping)]
    if not any(all(str(p.get(k) or "").strip() for k in PROVIDER_KEYS) for p in providers):
        return f"[auth] (or an [auth.<provider>] section) lacks {', '.join(PROVIDER_KEYS)}"
    return None


@dataclass(frozen=True)
class Admission:
    allowed: bool
    message: str  # what a refused user reads; for an allowed one, who they are


@dataclass(frozen=True)
class Allowlist:
    emails: frozenset[str]
    domains: frozenset[str]

    @classmethod
    def from_settings(cls, settings) -> Allowlist:
        return cls(frozenset(e.strip().lower() for e in settings.allowed_emails),
                   frozenset(d.strip().lower().lstrip("@") for d in settings.allowed_domains))

    def decide(self, claims: Mapping[str, Any]) -> Admission:
        """Admit a logged-in user by their OpenID claims (email, email_verified)."""
        email = str(claims.get("email") or "").strip().lower()
        if not self.emails and not self.domains:
            return Admission(False, "This dashboard admits nobody yet: its allowlist is empty. An administrator "
                                    "sets AUDIO_CNN_ALLOWED_EMAILS or AUDIO_CNN_ALLOWED_DOMAINS.")
        if len(email) > 254 or not _EMAIL.fullmatch(email):
            return Admission(False, "Your login did not share a usable email address, so this dashboard cannot tell "
                                    "whether you are allowed in.")
        if claims.get("email_verified") in (False, "false", "False"):
            return Admission(False, f"The address {email} is not verified by your login provider: not allowed.")
        if email in self.emails or email.split("@")[1] in self.domains:
            return Admission(True, email)
        return Admission(False, f"{email} is not allowed to use this dashboard. Ask its administrator to add "
                                "you to AUDIO_CNN_ALLOWED_EMAILS or your domain to AUDIO_CNN_ALLOWED_DOMAINS.")

