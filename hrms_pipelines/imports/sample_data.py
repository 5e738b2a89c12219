"""Deterministic sample data: the sample company under seeds/sample, and big files for the benchmark.

    python -m hrms_pipelines.imports.sample_data seeds/sample              # the sample company
    python -m hrms_pipelines.imports.sample_data OUT --users 100000 --events 1000000

Same seed, same bytes: the committed sample is regenerated exactly. Rows are written one at a time,
so memory stays flat however many are asked for.
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import date, timedelta
from pathlib import Path

from hrms_pipelines.imports import formats

FIRST = ["Kwame", "Ama", "Kofi", "Akosua", "Yaw", "Abena", "Kwabena", "Adwoa", "Kojo", "Efua", "Kwaku", "Afua",
         "Kwesi", "Esi", "Nana", "Yaa", "Fiifi", "Araba", "Selorm", "Elikem", "Dzifa", "Mawuli", "Edem", "Akua",
         "Ibrahim", "Fatima", "Abdul", "Zainab", "Issah", "Mariam", "Naa", "Nii", "Korkor", "Tetteh", "Dede", "Ekow"]
LAST = ["Mensah", "Owusu", "Boateng", "Asante", "Osei", "Agyeman", "Appiah", "Darko", "Ofori", "Amoah", "Addo",
        "Quaye", "Tetteh", "Lamptey", "Ansah", "Frimpong", "Gyamfi", "Acheampong", "Sarpong", "Nkrumah", "Danso",
        "Adjei", "Kumi", "Yeboah", "Amponsah", "Bonsu", "Agbeko", "Dogbe", "Fuseini", "Alhassan", "Mahama", "Abubakar"]
LADDERS = [
    ("ENG", "Engineering", "Software and infrastructure engineers",
     ["Associate Engineer", "Engineer", "Senior Engineer", "Staff Engineer", "Principal Engineer", "Distinguished Engineer"],
     ["Delivery", "Technical Craft", "Collaboration", "Ownership"]),
    ("CLM", "Claims Management", "Claims officers and assessors",
     ["Claims Assistant", "Claims Officer", "Senior Claims Officer", "Claims Manager", "Head of Claims"],
     ["Accuracy", "Throughput", "Provider Relations"]),
    ("CRP", "Corporate Services", "Finance, HR and administration",
     ["Officer", "Senior Officer", "Principal Officer", "Deputy Director", "Director"],
     ["Stewardship", "Compliance", "Stakeholder Management"]),
]
BASE_SALARY = 3200  # GHS per month at level 1; each level about +32 %
SALARY_CAP = 250_000
DEPARTMENTS = [("ICT", "Information and Communication Technology"), ("CLAIMS", "Claims Processing"),
               ("FIN", "Finance"), ("HRD", "Human Resources"), ("OPS", "Operations")]
TRIBES = [("DIGITAL", "Digital Services", "ICT"), ("MEMBERSHIP", "Membership & Enrolment", "OPS"),
          ("CLAIMS-T", "Claims & Provider Payments", "CLAIMS"), ("CORPORATE", "Corporate Services", "FIN")]
TEAMS = [("MOBILE", "Mobile Renewal", "DIGITAL", "ICT"), ("PORTAL", "Provider Portal", "DIGITAL", "ICT"),
         ("DATA", "Data Platform", "DIGITAL", "ICT"), ("ENROL", "Enrolment Centres", "MEMBERSHIP", "OPS"),
         ("IDVERIFY", "Identity Verification", "MEMBERSHIP", "OPS"), ("VETTING", "Claims Vetting", "CLAIMS-T", "CLAIMS"),
         ("PAYMENTS", "Provider Payments", "CLAIMS-T", "CLAIMS"), ("AUDIT", "Clinical Audit", "CLAIMS-T", "CLAIMS"),
         ("PAYROLL", "Payroll", "CORPORATE", "FIN"), ("PEOPLE", "People Operations", "CORPORATE", "HRD")]
CHAPTERS = [("BACKEND", "Backend Engineering"), ("FRONTEND", "Frontend Engineering"), ("QA", "Quality Assurance"),
            ("ASSESSORS", "Claims Assessors"), ("ACCOUNTANTS", "Accountants")]
TEAM_LADDER = {"ICT": "ENG", "CLAIMS": "CLM", "OPS": "CLM", "FIN": "CRP", "HRD": "CRP"}


def level_salary(level: int) -> int:
    return round(BASE_SALARY * 1.32 ** (level - 1), -2)


def write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def ladder_rows():
    for code, name, description, titles, aspects in LADDERS:
        yield ["ladder", code, name, "", "", "", "", "", "", "", "", "", description]
        for position, aspect in enumerate(aspects, start=1):
            yield ["aspect", code, "", aspect.upper().replace(" ", "_").replace("&", "AND"), aspect, position, "", "", "", "", "", "", ""]
        for level, title in enumerate(titles, start=1):
            low = level_salary(level)
            yield ["level", code, "", "", "", "", level, title, f"P{level}", f"{low:.2f}", f"{round(low * 1.3, -2):.2f}", "GHS", ""]


def people(count: int, rng: random.Random, domain: str = "nhia.gov.gh"):
    """(email, first, last) for `count` people, emails unique."""
    seen: dict[str, int] = {}
    for _ in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        base = f"{first}.{last}".lower()
        seen[base] = seen.get(base, 0) + 1
        email = f"{base}{seen[base] if seen[base] > 1 else ''}@{domain}"
        yield email, first, last


def user_rows(count: int, rng: random.Random):
    """Users with managers earlier in the list (no cycles), teams, chapters, ladder levels."""
    rows = []
    for index, (email, first, last) in enumerate(people(count, rng)):
        team, _name, _tribe, department = TEAMS[index % len(TEAMS)]
        ladder = TEAM_LADDER[department]
        levels = len(next(l for l in LADDERS if l[0] == ladder)[3])
        level = max(1, min(levels, int(rng.triangular(1, levels + 1, 2))))
        hire = date(2008, 1, 1) + timedelta(days=rng.randrange(0, 16 * 365))
        manager = "" if index < len(TEAMS) else rows[rng.randrange(0, max(1, min(index, count // 8 or 1)))][0]
        chapter = CHAPTERS[index % len(CHAPTERS)][0] if department in ("ICT", "CLAIMS", "FIN") else ""
        title = next(l for l in LADDERS if l[0] == ladder)[3][level - 1]
        status = "active" if rng.random() > 0.04 else rng.choice(["on_leave", "suspended"])
        rows.append([email, f"NHIA{index + 1:06d}", first, last, title, status, hire.isoformat(), "",
                     f"{(date(2025, 1, 1) - hire).days / 365.25:.2f}", department, team, chapter, manager, ladder, level])
    return rows


def history_rows(users, events: int, rng: random.Random):
    """About `events` events spread over the users: hire, then promotions, salary changes, notes."""
    per_user = max(1, events // max(1, len(users)))
    extra = events - per_user * len(users)
    for index, user in enumerate(users):
        email, ladder, top_level, hire = user[0], user[13], int(user[14]), date.fromisoformat(user[6])
        n = per_user + (1 if index < extra else 0)
        level = 1 if top_level > 1 else top_level
        salary = level_salary(level)
        day = hire
        yield [email, "hire", hire.isoformat(), "", ladder, level, "", "", f"P{level}", f"{salary:.2f}", "", "GHS", ""]
        used = {("hire", hire)}
        for _ in range(n - 1):
            day = day + timedelta(days=rng.randrange(60, 400))
            kind = rng.choices(["promotion", "salary_change", "note", "leave", "return", "title_change"], [3, 4, 1, 1, 1, 0.5])[0]
            if kind == "promotion" and level >= top_level:
                kind = "salary_change"
            if (kind, day) in used:
                continue
            used.add((kind, day))
            if kind == "promotion":
                previous, level = level, level + 1
                new_salary = min(max(level_salary(level), round(salary * 1.2, -1)), SALARY_CAP)
                yield [email, kind, day.isoformat(), "", ladder, level, previous, "", f"P{level}", f"{new_salary:.2f}", f"{salary:.2f}", "GHS", ""]
                salary = new_salary
            elif kind == "salary_change":
                new_salary = min(round(salary * rng.uniform(1.03, 1.12), -1), SALARY_CAP)
                yield [email, kind, day.isoformat(), "", "", "", "", "", f"P{level}", f"{new_salary:.2f}", f"{salary:.2f}", "GHS", "Annual review"]
                salary = new_salary
            elif kind == "note":
                yield [email, kind, day.isoformat(), "", "", "", "", "", "", "", "", "", rng.choice(
                    ["Completed NHIA leadership course", "Commended for the renewal campaign, \"above and beyond\"",
                     "Mentor for new claims officers", "Certified in data protection (DPC Ghana)"])]
            else:
                yield [email, kind, day.isoformat(), "", "", "", "", "", "", "", "", "", ""]


def generate(out: Path, *, users: int = 200, events: int = 2000, seed: int = 20240601, org: bool = True) -> dict[str, int]:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    if org:
        ladders = list(ladder_rows())
        write_csv(out / "ladders.csv", formats.LADDERS_COLUMNS, ladders)
        counts["ladders"] = len(ladders)
    user_list = user_rows(users, rng)
    if org:
        leaders = {team[0]: user_list[i][0] for i, team in enumerate(TEAMS)}
        write_csv(out / "organizations.csv", ["organization_code", "organization_name"],
                  [["NHIA", "National Health Insurance Authority"]])
        write_csv(out / "departments.csv", ["department_code", "department_name", "organization_code"],
                  [[c, n, "NHIA"] for c, n in DEPARTMENTS])
        write_csv(out / "tribes.csv", ["tribe_code", "tribe_name", "organization_code", "lead_email"],
                  [[c, n, "NHIA", leaders[next(t[0] for t in TEAMS if t[2] == c)]] for c, n, _d in TRIBES])
        write_csv(out / "chapters.csv", ["chapter_code", "chapter_name", "organization_code", "leader_email"],
                  [[c, n, "NHIA", user_list[len(TEAMS) + i][0]] for i, (c, n) in enumerate(CHAPTERS)])
        write_csv(out / "teams.csv", ["team_code", "team_name", "tribe_code", "department_code", "leader_email"],
                  [[c, n, t, d, leaders[c]] for c, n, t, d in TEAMS])
    write_csv(out / "users.csv", formats.USERS_COLUMNS, user_list)
    counts["users"] = len(user_list)
    n = 0
    with (out / "history.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(formats.HISTORY_COLUMNS)
        for row in history_rows(user_list, events, rng):
            writer.writerow(row)
            n += 1
    counts["history"] = n
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)
    print(generate(args.out, users=args.users, events=args.events, seed=args.seed))


if __name__ == "__main__":
    main()
