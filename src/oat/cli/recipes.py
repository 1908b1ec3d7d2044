"""``oat recipes``: the bundled YAML recipes (the paper's runs)."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("recipes", help="list the bundled recipes", description="List recipes, or print one.")
    p.add_argument("--show", metavar="NAME", help="print a recipe's YAML")
    return p


def run(args) -> int:
    from oat.recipes import list_recipes, recipe_text

    if args.show:
        print(recipe_text(args.show))
        return 0
    for name, command in list_recipes():
        print(f"{name:<34} {command}")
    return 0
