"""`fpnas selfcheck`: exercise the C++ distribution core and report."""

from __future__ import annotations

import argparse


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text + ".")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fpnas_dsl.distribution import self_check

    print(self_check())
    return 0
