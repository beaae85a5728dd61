"""Display names for the generator's reps and teams: a roster for the demo and the compose stack.

Why: the generator's reps are ``rep-001``, ``rep-002``…; a demo wallboard should show what a
real one shows, people's names (``[people] roster``, :mod:`engine.people.roster`). The names are
fixed by position, so the same teams and reps always get the same names.
"""

from __future__ import annotations

from engine.tooling.generator import team_names

FIRST = ("Anna", "Jonas", "Lena", "Felix", "Marie", "Lukas", "Sophie", "Paul", "Clara", "Max",
         "Emma", "Leon", "Ingrid", "Lars", "Sofie", "Mikkel", "Astrid", "Erik", "Freja", "Oskar",
         "Linnea", "Nils", "Sanna", "Henrik", "Fleur", "Daan", "Noor", "Bram", "Lotte", "Sem",
         "Eline", "Thijs", "Julie", "Ruben", "Anouk", "Jesse", "Camille", "Hugo", "Léa", "Louis",
         "Chloé", "Jules", "Manon", "Arthur", "Inès", "Gabriel", "Zoé", "Théo", "Olivia",
         "Harry", "Amelia", "Jack", "Isla", "Oliver", "Ava", "Charlie", "Grace", "George",
         "Siobhan", "Liam")
LAST = ("Schmidt", "Weber", "Fischer", "Wagner", "Becker", "Hoffmann", "Koch", "Richter",
        "Klein", "Wolf", "Schröder", "Neumann", "Johansson", "Nilsen", "Hansen", "Lindqvist",
        "Berg", "Virtanen", "Jensen", "Andersen", "Ødegaard", "Karlsson", "Laine", "Larsen",
        "de Vries", "Jansen", "Peeters", "Bakker", "Visser", "Smit", "Maes", "Mertens", "Dubois",
        "Claes", "Willems", "Hendriks", "Martin", "Bernard", "Moreau", "Laurent", "Lefèvre",
        "Roux", "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Smith", "Jones",
        "Taylor", "Brown", "Murphy", "O'Brien", "Walsh", "Byrne", "Evans", "Wilson", "Kelly",
        "Ryan")
TEAM_DISPLAY = {"dach": "DACH", "nordics": "Nordics", "benelux": "Benelux", "france": "France",
                "uk-ireland": "UK & Ireland", "iberia": "Iberia", "italy": "Italy", "cee": "CEE"}


def rep_name(index: int) -> str:
    """The display name of the generator's ``index``-th rep (0-based: ``rep-001`` is 0)."""
    return f"{FIRST[index % len(FIRST)]} {LAST[(index + index // len(LAST) * 7) % len(LAST)]}"


def roster_toml(teams: int, reps_per_team: int, crm_source: str | None = None,
                first_user_id: int = 1001) -> str:
    """A TOML roster naming the generator's teams and reps (its order: ``reps_per_team`` reps
    of each team in turn); with ``crm_source``, each rep also gets a user id of that CRM
    (``first_user_id``, then counting up) for the gateway."""
    out = ["[teams]\n"]
    names = team_names(teams)
    out += [f'{team} = "{TEAM_DISPLAY.get(team, team.replace("-", " ").title())}"\n'
            for team in names]
    for i in range(teams * reps_per_team):
        crm = f'crm = {{ {crm_source} = "{first_user_id + i}" }}\n' if crm_source else ""
        team = names[i // reps_per_team]
        out.append(f'\n[[people]]\nrep_id = "rep-{i + 1:03d}"\nteam_id = "{team}"\n'
                   f'name = "{rep_name(i)}"\n{crm}')
    return "".join(out)
