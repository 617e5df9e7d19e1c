"""Declared solver options: what each option accepts, its default and meaning, and the one check of every value.

Every solver class declares the options it adds in ``options_declared`` (name -> :class:`Option`), merged along
the class hierarchy by :meth:`~sdekit.solvers.Solver.declared_options`. :func:`check_given` checks given options
against declarations, by name (an unknown name gets close-match suggestions among the declared names and the
calling function's own arguments), by type (``bool`` is not an integer, a string is not a number) and by range
(NaN refused everywhere, infinities unless the range includes them), and returns them normalised (Python ``int``
and ``float``). :func:`sdekit.sample` and :func:`sdekit.logp` run it in their input checks, before any work;
:meth:`~sdekit.solvers.Solver.options` runs it again for direct :meth:`~sdekit.solvers.Solver.solve` calls.
Every failure is one :class:`~sdekit.errors.SolverOptionError` line naming the solver, the option, the value,
what is accepted and the default.

Contextual checks (a Brownian motion's shape against the batch, a grid that needs the marginal on a non-affine
SDE) stay with the solvers, which know the problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ..errors import SolverOptionError

__all__ = ["Option", "check_given", "close_matches", "unknown_message"]

_KINDS = ("int", "number", "choice", "flag", "custom")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a solver: its default, what it accepts and what it means.

    Build it with the constructors (:meth:`integer`, :meth:`positive_int`, :meth:`number`, :meth:`positive`,
    :meth:`choice`, :meth:`flag`, :meth:`custom`); :meth:`check` checks one value.

    Attributes:
        default: the value a run uses when the option is not given (for ``passthrough`` options: the backend's
            own default, shown in the docs only).
        doc: what the option means (one or two sentences, shown by ``sdekit solvers --options NAME``).
        kind: ``"int"``, ``"number"``, ``"choice"``, ``"flag"`` or ``"custom"``.
        lo, hi: range of ``"int"`` and ``"number"`` options (None: unbounded on that side).
        lo_open, hi_open: whether the bound itself is excluded.
        choices: the accepted values of a ``"choice"`` option (None among them if it is accepted).
        none: whether None is accepted besides the kind's values.
        accepts: ``"custom"`` options: the accepted values in words.
        test: ``"custom"`` options: whether a value is accepted.
        passthrough: a backend's own keyword (torchdiffeq's), passed on only when given.
        default_note: what the default means when the value alone does not say (``None``: "the solver's grid").
    """

    default: Any
    doc: str
    kind: str = "custom"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[Any, ...] = ()
    none: bool = False
    accepts: str = ""
    test: Callable[[Any], bool] | None = None
    passthrough: bool = False
    default_note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Option kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if not self.doc.strip():
            raise ValueError("an Option needs a doc saying what it means")
        if self.kind == "custom" and (self.test is None or not self.accepts):
            raise ValueError("a custom Option needs accepts= (in words) and test=")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def integer(
        cls, default: Any, doc: str, *, lo: int | None = None, hi: int | None = None, none: bool = False, **extra: Any
    ) -> Option:
        """An integer (``bool`` refused) in ``[lo, hi]``; None too with ``none=True``."""
        return cls(default, doc, "int", lo=lo, hi=hi, none=none, **extra)

    @classmethod
    def positive_int(cls, default: Any, doc: str, **extra: Any) -> Option:
        """An integer >= 1."""
        return cls.integer(default, doc, lo=1, **extra)

    @classmethod
    def number(
        cls,
        default: Any,
        doc: str,
        *,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        hi_open: bool = False,
        none: bool = False,
        **extra: Any,
    ) -> Option:
        """A real number (int or float, ``bool`` refused, NaN refused) in the range; infinite only when a closed
        bound is infinite (``hi=math.inf``)."""
        return cls(default, doc, "number", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, none=none, **extra)

    @classmethod
    def positive(cls, default: Any, doc: str, *, none: bool = False, **extra: Any) -> Option:
        """A finite number > 0; None too with ``none=True``."""
        return cls.number(default, doc, lo=0.0, lo_open=True, none=none, **extra)

    @classmethod
    def choice(cls, default: Any, choices: tuple[Any, ...], doc: str, **extra: Any) -> Option:
        """One of ``choices`` (compared by type and value: ``True`` is not ``1``); include None to accept it."""
        return cls(default, doc, "choice", choices=tuple(choices), **extra)

    @classmethod
    def flag(cls, default: bool, doc: str, **extra: Any) -> Option:
        """True or False (no other truthy values)."""
        return cls(default, doc, "flag", **extra)

    @classmethod
    def custom(
        cls, default: Any, doc: str, *, accepts: str, test: Callable[[Any], bool], none: bool = False, **extra: Any
    ) -> Option:
        """Anything ``test`` accepts (``accepts`` says what in words); None too with ``none=True``."""
        return cls(default, doc, "custom", none=none, accepts=accepts, test=test, **extra)

    # ------------------------------------------------------------------ words
    def expects(self) -> str:
        """What the option accepts, in words (``"an integer >= 1"``, ``"None or a number > 0"``, ...)."""
        if self.kind == "choice":
            return "one of " + ", ".join(map(repr, self.choices))
        words = {
            "int": lambda: "an integer" + self._range(),
            "number": lambda: "a number" + self._range(),
            "flag": lambda: "True or False",
            "custom": lambda: self.accepts,
        }[self.kind]()
        return f"None or {words}" if self.none else words

    def _range(self) -> str:
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None and hi != math.inf:
            return f" in {'(' if self.lo_open else '['}{_num(lo)}, {_num(hi)}{')' if self.hi_open else ']'}"
        parts = []
        if lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(lo)}")
        if hi is not None and hi != math.inf:
            parts.append(f"{'<' if self.hi_open else '<='} {_num(hi)}")
        text = " " + " and ".join(parts) if parts else ""
        return text + (" (inf allowed)" if hi == math.inf and not self.hi_open else "")

    def shown_default(self) -> str:
        """The default as shown in messages and tables (with :attr:`default_note` when there is one)."""
        text = _short(self.default)
        return f"{text} ({self.default_note})" if self.default_note else text

    # ------------------------------------------------------------------ the check
    def check(self, value: Any, name: str, who: str) -> Any:
        """``value`` normalised (``int``/``float`` for numbers, the declared choice for choices) if this option
        accepts it, else :class:`~sdekit.errors.SolverOptionError` naming ``who`` (e.g. ``"solver 'pc'"``),
        the option, the value, what is accepted and the default."""
        if value is None and (self.none or (self.kind == "choice" and None in self.choices)):
            return None
        why, out = self._judge(value)
        if why:
            raise SolverOptionError(
                f"{who}: option {name}={_short(value)} {why}; expected {self.expects()} "
                f"(default {self.shown_default()})"
            )
        return out

    def _judge(self, value: Any) -> tuple[str, Any]:
        """(why the value is refused or "", the normalised value)."""
        if self.kind == "flag":
            return ("" if isinstance(value, bool) else _wrong_type(value)), value
        if self.kind == "choice":
            for c in self.choices:
                if _same(value, c):
                    return "", c
            return "is not one of the choices", value
        if self.kind == "custom":
            assert self.test is not None
            return ("" if self.test(value) else "is not accepted"), value
        integral = self.kind == "int"
        wanted = numbers.Integral if integral else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            return _wrong_type(value), value
        v: float = int(value) if integral else float(value)
        if not integral and math.isnan(v):
            return "is NaN", value
        if not integral and math.isinf(v) and not (v > 0 and self.hi == math.inf and not self.hi_open):
            return "is not finite", value
        if not self._inside(v):
            return "is out of range", value
        return "", v

    def _inside(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))


def _same(value: Any, choice: Any) -> bool:
    """``value`` is ``choice`` by type and value (``True`` is not ``1``; any integer type matches an int choice)."""
    if choice is None or isinstance(choice, bool):
        return value is choice
    if isinstance(choice, int):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value == choice
    return type(value) is type(choice) and value == choice


def _wrong_type(value: Any) -> str:
    return f"has the wrong type ({type(value).__name__})"


def _num(x: float) -> str:
    return "inf" if x == math.inf else f"{x:g}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut at ``limit`` characters (a tensor's repr can be long)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- checking a mapping of given options
def check_given(
    given: Mapping[str, Any],
    declared: Mapping[str, Option],
    *,
    who: str,
    undeclared: Collection[str] = (),
    arguments: Collection[str] = (),
    function: str = "",
    keyword: bool = True,
    note: str = "",
) -> dict[str, Any]:
    """``given`` checked against ``declared`` by name, type and range, with its values normalised.

    Args:
        given: the options passed (e.g. the ``**options`` of :func:`sdekit.sample`).
        declared: name -> :class:`Option` of what is accepted.
        who: the messages' subject, e.g. ``"solver 'pc'"``.
        undeclared: further names accepted without a check (options a subclass declared only by default).
        arguments: the calling function's own argument names, for the suggestions of unknown names.
        function: that function's name (``"sample"``), for the suggestions.
        keyword: whether the options were passed as keywords (suggest ``steps=``) or as a dict's keys
            (suggest ``'max_num_steps'`` and ``logp(..., rtol=)``).
        note: appended to the unknown-name message (where the accepted names come from).

    Raises:
        SolverOptionError: an unknown name (with close matches) or a value its :class:`Option` refuses.
    """
    unknown = [k for k in given if k not in declared and k not in undeclared]
    if unknown:
        accepted = sorted({*declared, *undeclared})
        raise SolverOptionError(
            unknown_message(who, unknown, accepted, arguments=arguments, function=function, keyword=keyword) + note
        )
    return {k: declared[k].check(v, k, who) if k in declared else v for k, v in given.items()}


def unknown_message(
    who: str,
    unknown: list[str],
    accepted: list[str],
    *,
    arguments: Collection[str] = (),
    function: str = "",
    keyword: bool = True,
) -> str:
    """``"<who> got unknown option(s) 'stpes' (did you mean steps=?); it accepts ..."``: each unknown name with its
    close matches among ``accepted`` and the function's ``arguments`` (:func:`check_given`)."""
    parts = []
    for key in unknown:
        shown = _short(key)
        hint = _suggest(key, accepted, arguments, function, keyword) if isinstance(key, str) else ""
        parts.append(f"{shown} ({hint})" if hint else shown)
    return f"{who} got unknown option(s) {', '.join(parts)}; it accepts {', '.join(accepted) or 'no options'}"


def _suggest(key: str, accepted: list[str], arguments: Collection[str], function: str, keyword: bool) -> str:
    """``"did you mean steps=?"``: close matches of ``key`` among the options and the function's arguments."""
    if not keyword and key in arguments:
        return f"{key} is an argument of {function}(): pass {function}(..., {key}=...)"
    own = [a for a in arguments if a != key]  # a keyword the function itself handed on is no suggestion of its own
    close = close_matches(key, list(dict.fromkeys([*accepted, *own])))  # snr: an option and an argument
    if not close:
        return ""

    def shown(name: str) -> str:
        if keyword:
            return f"{name}="
        return f"{function}(..., {name}=)" if name in own and name not in accepted else repr(name)

    return "did you mean " + " or ".join(shown(c) for c in close) + "?"


def close_matches(key: str, names: Collection[str]) -> list[str]:
    """The names closest to ``key`` (:func:`difflib.get_close_matches`, similarity >= 0.6), keeping only those within
    0.1 of the best, so that ``stpes`` suggests ``steps`` and not also ``shape`` and ``dtype``."""
    scored = [(difflib.SequenceMatcher(None, key, n).ratio(), n) for n in difflib.get_close_matches(key, names, 3, 0.6)]
    best = max((score for score, _ in scored), default=0.0)
    return [n for score, n in scored if score >= best - 0.1]
