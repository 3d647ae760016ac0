"""Every option of every subcommand says what it does in --help."""
import argparse

from mirrord.cli import build_parser


def walk(p: argparse.ArgumentParser, path: str):
    for a in p._actions:
        yield path, a
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from walk(sub, f"{path} {name}")


def test_every_option_has_a_help_text():
    actions = list(walk(build_parser(), "mirrord"))
    missing = [f"{path}: {'/'.join(a.option_strings) or a.dest}" for path, a in actions
               if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []
    # the walk reached every subcommand (a walk that saw nothing would pass the check above)
    paths = {path for path, _ in actions}
    assert {"mirrord run", "mirrord forward", "mirrord status", "mirrord demo", "mirrord check-config",
            "mirrord ring-stat"} <= paths
    assert any(path == "mirrord run" and "--config" in a.option_strings for path, a in actions)
