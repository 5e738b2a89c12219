"""The CSV layouts: which columns each file has, which are required, and how a file or a row is
recognised. The README's format tables describe the same thing for people."""

from __future__ import annotations

from dataclasses import dataclass

EVENT_TYPES = (
    "hire", "promotion", "demotion", "level_change", "salary_change", "ladder_change", "team_change",
    "title_change", "transfer", "leave", "return", "termination", "rehire", "note",
)
"""The CHECK list of hrms.history_timelineevent.event_type."""

USER_STATUSES = ("active", "on_leave", "suspended", "terminated", "inactive")
LADDER_ROW_TYPES = ("ladder", "aspect", "level")

LADDERS_COLUMNS = (
    "row_type", "ladder_code", "ladder_name", "aspect_code", "aspect_name", "position",
    "level_number", "level_title", "pay_band", "salary_min", "salary_max", "currency", "description",
)
USERS_COLUMNS = (
    "email", "employee_number", "first_name", "last_name", "job_title", "status", "hire_date",
    "termination_date", "tenure_years", "department_code", "team_code", "chapter_code",
    "manager_email", "ladder_code", "level_number",
)
HISTORY_COLUMNS = (
    "email", "event_type", "event_date", "summary", "ladder_code", "level_number",
    "previous_level_number", "title", "pay_band", "salary", "previous_salary", "currency", "notes",
)


@dataclass(frozen=True)
class OrgKind:
    """One kind of organisation file, recognised by its `<kind>_code` and `<kind>_name` columns."""

    kind: str            # organizations, departments, tribes, chapters, teams
    table: str           # hrms.org_*
    prefix: str          # organization, department, ...
    columns: tuple[str, ...]
    required: tuple[str, ...]
    leader_column: str | None = None   # a leader referenced by email
    leader_fk: str | None = None       # the table's column that holds the leader's employee id

    @property
    def key(self) -> str:
        return f"{self.prefix}_code"


ORG_KINDS = (
    OrgKind("organizations", "hrms.org_organization", "organization",
            ("organization_code", "organization_name"), ("organization_code", "organization_name")),
    OrgKind("departments", "hrms.org_department", "department",
            ("department_code", "department_name", "organization_code"),
            ("department_code", "department_name", "organization_code")),
    OrgKind("tribes", "hrms.org_tribe", "tribe",
            ("tribe_code", "tribe_name", "organization_code", "lead_email"),
            ("tribe_code", "tribe_name", "organization_code"), "lead_email", "lead_id"),
    OrgKind("chapters", "hrms.org_chapter", "chapter",
            ("chapter_code", "chapter_name", "organization_code", "leader_email"),
            ("chapter_code", "chapter_name", "organization_code"), "leader_email", "leader_id"),
    OrgKind("teams", "hrms.org_team", "team",
            ("team_code", "team_name", "tribe_code", "department_code", "leader_email"),
            ("team_code", "team_name"), "leader_email", "leader_id"),
)


def detect_org_kind(columns: list[str]) -> OrgKind | None:
    """The kind whose code and name columns the header has; None when no kind (or several) match."""
    present = set(columns)
    matches = [k for k in ORG_KINDS if {f"{k.prefix}_code", f"{k.prefix}_name"} <= present]
    return matches[0] if len(matches) == 1 else None


def org_detection_help() -> str:
    return "; ".join(f"{k.kind}: {k.prefix}_code + {k.prefix}_name" for k in ORG_KINDS)
