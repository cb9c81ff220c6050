"""The benchmark case registry, used by `python -m fastloss bench` (cli.py) and by the
pytest-benchmark suite in bench/.

Every module in this package that defines CASES (a list of core.Case) is a loss
family's set of cases; there is one per fastloss.<family> module, named the same.
A family's module is added here when its functions exist, and nothing else needs
to change: all_cases() finds it.
"""
import importlib
import pkgutil

from .core import Case

_INFRA = {"core", "builders", "cli", "report", "runner"}
_cases = None


def family_modules():
    """Names of the family modules in this package, in a stable order."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _INFRA)
    order = ("classification", "regression", "divergence", "gaussian", "metric")
    first = [n for n in order if n in names]
    return first + [n for n in names if n not in first]


def all_cases():
    """Every registered case, family by family, in each family's own order."""
    global _cases
    if _cases is None:
        cases = []
        for name in family_modules():
            mod = importlib.import_module(f"{__name__}.{name}")
            cases.extend(getattr(mod, "CASES", ()))
        ids = [c.id for c in cases]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise RuntimeError(f"benchmark cases registered twice: {sorted(dup)}")
        _cases = list(cases)
    return list(_cases)


class UnknownName(ValueError):
    """A --filter name that matches no case."""


def filter_names(cases=None):
    """Every name --filter accepts: families, functions, function:size, case ids."""
    cases = all_cases() if cases is None else cases
    seen = {}
    for key in (lambda c: c.family, lambda c: c.func, lambda c: c.sized, lambda c: c.id):
        for c in cases:
            seen.setdefault(key(c), None)
    return list(seen)


QUICK_VARIANTS = ("grad", "fwd")


def select(names=None, large=False, cases=None, quick=False):
    """The cases a run does. names: --filter names (None: all); a name matches a case's
    family, function, function:size or id. Large cases run with large=True, or when a
    name picks them by size or id. quick: only the gradient case of each function
    (QUICK_VARIANTS), unless a name is the case's id. Unknown names raise UnknownName."""
    cases = all_cases() if cases is None else cases
    if quick:
        named = set(names or ())
        cases = [c for c in cases if c.variant in QUICK_VARIANTS or c.id in named]
    if not names:
        return [c for c in cases if large or not c.large]
    valid = set(filter_names(cases))
    bad = [n for n in names if n not in valid]
    if bad:
        short = [n for n in filter_names(cases) if n.count(":") < 2 and n not in
                 {c.id for c in cases}]
        raise UnknownName(
            f"unknown --filter name{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; "
            f"valid names: {', '.join(short)}, or a case id (see --list)")
    out = []
    for c in cases:
        if c.sized in names or c.id in names:
            out.append(c)
        elif (c.family in names or c.func in names) and (large or not c.large):
            out.append(c)
    return out


__all__ = ["Case", "all_cases", "family_modules", "filter_names", "select", "UnknownName"]
