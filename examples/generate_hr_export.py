#!/usr/bin/env python3
"""Generates examples/hr-export.csv, the sample HR export the `demo` command provisions.

Deterministic (fixed seed, standard library only), so the committed file can be regenerated and
reviewed:

    python3 examples/generate_hr_export.py > examples/hr-export.csv

The file looks like a typical HR-system export (aliased column names, a Status word instead of
an active flag) and deliberately holds what real exports hold:
  * leavers (Status "Terminated" or "Leaver"),
  * invalid rows: bad email addresses, missing names, status words nobody mapped,
  * the same person twice with the userName differing in case (the last row wins),
  * non-ASCII names, apostrophes, and quoted fields containing commas.
"""

import csv
import random
import sys
import unicodedata

SEED = 20240601
ROWS = 1040
DOMAIN = "example.com"

HEADER = [
    "Employee ID",
    "First Name",
    "Last Name",
    "Work Email",
    "Department",
    "Job Title",
    "Status",
    "Phone",
]

FIRST_NAMES = [
    "Ada", "Grace", "Alan", "Katherine", "José", "Zoë", "Łukasz", "Søren", "François",
    "Ngozi", "Aoife", "Siobhán", "Björn", "Chloé", "Dmitri", "Emeka", "Fatima", "Giulia",
    "Hiroshi", "Ingrid", "Jürgen", "Kwame", "Leïla", "Mateo", "Nadia", "Oğuz", "Priya",
    "Quentin", "Rania", "Sven", "Tomás", "Uwe", "Valentina", "Wei", "Ximena", "Yusuf",
    "Zainab", "Ana", "Ben", "Carla", "David", "Elena", "Farid", "Hannah", "Irene", "Jonas",
    "Kira", "Liam", "Maya", "Noah", "Olivia", "Pablo", "Rosa", "Samir", "Tara", "Victor",
]

LAST_NAMES = [
    "Lovelace", "Hopper", "Turing", "Johnson", "García", "Müller", "Nowak", "Kierkegaard",
    "Lefèvre", "Okafor", "O'Brien", "Ní Bhriain", "Björk", "Dubois", "Ivanov", "Nwosu",
    "Haddad", "Rossi", "Tanaka", "Larsen", "Schäfer", "Mensah", "Benali", "Fernández",
    "Kowalczyk", "Yılmaz", "Sharma", "Durand", "Saleh", "Andersson", "Silva", "Weber",
    "Conti", "Zhang", "López", "Demir", "Abubakar", "van der Berg", "Smith-Jones", "Novák",
]

DEPARTMENTS = [
    "Customer Care", "Sales, EMEA", "Sales, Americas", "Billing", "Technical Support",
    "Workforce Management", "Quality Assurance", "Human Resources", "Finance", "IT",
]

TITLES = [
    "Agent", "Senior Agent", "Team Lead", "Manager, Customer Care", "Supervisor", "Analyst",
    "Workforce Planner", "Trainer", "Director, Operations", "QA Specialist",
    'Agent "Tier 2"',
]

# Letters NFKD does not decompose into ASCII.
FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ı": "i", "ß": "ss"})


def ascii_part(name):
    """The name as an email local-part fragment: ASCII letters only, lower case."""
    folded = unicodedata.normalize("NFKD", name.translate(FOLD))
    return "".join(c for c in folded if c.isascii() and c.isalpha()).lower()


def phone(rng):
    """A work phone number in one of a few national formats, sometimes absent."""
    kind = rng.random()
    if kind < 0.1:
        return ""
    if kind < 0.55:
        return f"+1 555 01{rng.randrange(100):02d}"
    if kind < 0.8:
        return f"+44 20 7946 0{rng.randrange(1000):03d}"
    return f"+49 30 901820{rng.randrange(100):02d}"


def make_people(rng, count):
    """`count` distinct people with unique, deterministic email addresses."""
    seen = set()
    people = []
    while len(people) < count:
        first = rng.choice(FIRST_NAMES)
        last = rng.choice(LAST_NAMES)
        base = f"{ascii_part(first)}.{ascii_part(last)}"
        local = base
        n = 2
        while local in seen:
            local = f"{base}{n}"
            n += 1
        seen.add(local)
        people.append(
            {
                "id": f"E{10000 + len(people)}",
                "first": first,
                "last": last,
                "email": f"{local}@{DOMAIN}",
                "department": rng.choice(DEPARTMENTS),
                "title": rng.choice(TITLES),
                "status": "Active",
                "phone": phone(rng),
            }
        )
    return people


def row(p):
    return [p["id"], p["first"], p["last"], p["email"], p["department"], p["title"], p["status"], p["phone"]]


def invalid_rows(rng, people):
    """Rows a validator must reject, each with a userName no valid row uses."""
    rows = []
    templates = [
        ("bad-email", lambda p: {**p, "email": p["email"].replace("@", ".")}),
        ("bad-email", lambda p: {**p, "email": p["email"].replace("example.com", "example")}),
        ("bad-email", lambda p: {**p, "email": p["email"].replace(".", " ", 1)}),
        ("bad-email", lambda p: {**p, "email": p["email"].replace("@", "@@")}),
        ("no-first", lambda p: {**p, "first": ""}),
        ("no-last", lambda p: {**p, "last": "  "}),
        ("status", lambda p: {**p, "status": "On Leave"}),
        ("status", lambda p: {**p, "status": "Suspended"}),
    ]
    for i, p in enumerate(people):
        _, broken = templates[i % len(templates)]
        q = broken(p)
        rows.append(row(q))
    rng.shuffle(rows)
    return rows


def main():
    rng = random.Random(SEED)
    invalid_count = 24
    duplicate_pairs = 6
    people = make_people(rng, ROWS - duplicate_pairs)
    broken_people, people = people[:invalid_count], people[invalid_count:]

    # About 6% leavers, spread through the file.
    for p in people:
        if rng.random() < 0.06:
            p["status"] = rng.choice(["Terminated", "Leaver", "terminated"])

    rows = [row(p) for p in people]

    # The same person twice, the userName differing in case; the later row (a promotion, or
    # the person leaving) is the one that counts.
    # Positions refer to the rows before any insertion; inserting from the end keeps them valid.
    later_rows = []
    for k in range(duplicate_pairs):
        i = 40 + k * 150
        p = people[i]
        local, domain = p["email"].split("@")
        shouted = {**p, "email": f"{local.title()}@{domain.upper()}", "title": "Agent"}
        rows[i] = row(shouted)
        later = {
            **p,
            "title": "Team Lead" if k % 3 else p["title"],
            "status": "Leaver" if k % 3 == 0 else "Active",
        }
        later_rows.append((min(i + 300 + k, len(rows)), row(later)))
    for at, later in sorted(later_rows, key=lambda x: x[0], reverse=True):
        rows.insert(at, later)

    # Invalid rows, scattered.
    for bad in invalid_rows(rng, broken_people):
        rows.insert(rng.randrange(1, len(rows)), bad)

    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(HEADER)
    out.writerows(rows)


if __name__ == "__main__":
    main()
