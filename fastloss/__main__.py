"""The command line: `python -m fastloss COMMAND ...`, also installed as `fastloss COMMAND ...`.

Commands:
  bench   time every loss against NumPy, SciPy, PyTorch and JAX (python -m fastloss bench -h)
"""
import os
import sys

COMMANDS = {"bench": "time every loss against NumPy, SciPy, PyTorch and JAX"}


def _usage(stream):
    print("usage: python -m fastloss COMMAND [options]   (or: fastloss COMMAND [options])\n\n"
          "commands:", file=stream)
    for name, text in COMMANDS.items():
        print(f"  {name:8s}{text}", file=stream)
    print("\n`python -m fastloss COMMAND -h` shows a command's options.", file=stream)


def main(argv=None):
    """Entry point; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        _usage(sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd in ("-h", "--help"):
        _usage(sys.stdout)
        return 0
    if cmd == "bench":
        from ._bench.cli import main as bench
        try:
            return bench(rest)
        except SystemExit as e:            # argparse: -h (0) and usage errors (2)
            return e.code if isinstance(e.code, int) else 2
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:            # `... | head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    print(f"fastloss: unknown command {cmd!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
    _usage(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
