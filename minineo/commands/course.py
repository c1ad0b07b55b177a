"""python -m minineo.course: what an instructor runs.

    python -m minineo.course setup DIR        a student's workspace: the stub file and the exercise notebooks
    python -m minineo.course pages OUT [NB]   the notebooks, executed, as static HTML pages with an index
"""
from ..course.pages import build
from ..course.workspace import set_up
from .common import Parser, run_command


def run(args):
    if args.command == "setup":
        written = set_up(args.folder)
        print(f"{args.folder}: {', '.join(p.name for p in written)}")
        print(f"next: open the notebooks in {args.folder}, or write the functions in {written[0].name}, and check one "
              f"with\n  python -m minineo.check layer_norm {written[0]}\nor all of them with\n"
              f"  python -m minineo.check all {written[0]}")
    else:
        build(args.out, args.notebooks or None)


def parser():
    p = Parser(prog="python -m minineo.course", description="The course kit for an instructor: "
               "a student's workspace, and the notebooks as HTML pages.")
    commands = p.add_subparsers(dest="command", required=True, metavar="{setup,pages}")
    setup = commands.add_parser("setup", help="copy the stub file and the exercise notebooks into a new folder")
    setup.add_argument("folder", metavar="DIR", help="the student's folder (made if missing; existing files are never overwritten)")
    pages = commands.add_parser("pages", help="execute the notebooks and write them as HTML pages with an index")
    pages.add_argument("out", metavar="OUT", help="the folder for the pages")
    pages.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                       help="notebooks to build (default: the demonstrations and the exercises)")
    return p


def main(argv=None):
    return run_command(run, parser().parse_args(argv))
