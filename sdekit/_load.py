"""The one SDE vocabulary of the command line: ``vp``, ``VPSDE`` or ``module:Class`` -> an :class:`sdekit.SDE`;
and the model vocabulary: ``module:name`` or ``module:factory()`` -> a callable ``model(x, t)``.

Every command that takes an SDE (``sdekit demo``, ``sdekit derive``, ``sdekit validate`` /
``python -m validation``) resolves it with :func:`resolve_sde`, so they all accept the same names:

* a short name of the zoo: ``vp``, ``subvp``, ``ve``, ``cosine``, ``edm``, ``ou``, ``bm`` (:data:`SHORT_NAMES`);
* a zoo class name: ``VPSDE``, ``SubVPSDE``, ``VESDE``, ``CosineVPSDE``, ``EDMSDE``, ``OrnsteinUhlenbeck``,
  ``BrownianMotion`` (case does not matter for these two forms);
* the k-component SDEs of the zoo: ``cld`` / ``CLDSDE`` (:data:`COMPONENT_NAMES`; not in ``zoo.__all__``, whose
  scalar SDEs the commands loop over);
* ``module:Name``: an :class:`sdekit.SDE` subclass (instantiated with its defaults) or an instance in an
  importable module (the current directory is importable).

A model (``sdekit logp --model``) is resolved by :func:`resolve_model`: ``module:name`` is the model itself
(a function, an ``nn.Module`` instance, any callable ``model(x, t)``), ``module:factory()`` calls a
zero-argument factory (a function, or a class such as an ``nn.Module`` subclass that builds and loads itself)
and takes what it returns.

Every failure is an :class:`SDESpecError` or :class:`ModelSpecError` (both ``ValueError``) with a one-line
message that says what was wrong and what to pass instead. This module imports nothing heavy at import time
(the console script builds its help from :data:`SHORT_NAMES` without loading torch or sympy).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

from .errors import SDEDeclarationError

if TYPE_CHECKING:
    from .symbolic.sde import SDE

__all__ = [
    "SHORT_NAMES",
    "COMPONENT_NAMES",
    "SDESpecError",
    "ModelSpecError",
    "resolve_sde",
    "resolve_model",
    "check_compiles",
    "sde_metavar",
    "sde_help",
]

SHORT_NAMES: dict[str, str] = {
    "vp": "VPSDE",
    "subvp": "SubVPSDE",
    "ve": "VESDE",
    "cosine": "CosineVPSDE",
    "edm": "EDMSDE",
    "ou": "OrnsteinUhlenbeck",
    "bm": "BrownianMotion",
}
"""Short name -> class of :mod:`sdekit.symbolic.zoo` (one entry per class of ``zoo.__all__``)."""

COMPONENT_NAMES: dict[str, str] = {"cld": "CLDSDE"}
"""Short name -> k-component SDE class of :mod:`sdekit.symbolic.zoo` (resolved like :data:`SHORT_NAMES`)."""


class SDESpecError(ValueError):
    """An SDE name that cannot be resolved or an SDE that cannot be used; the message is one line."""


class ModelSpecError(ValueError):
    """A ``module:name`` / ``module:factory()`` model spec that cannot be resolved; the message is one line."""


def sde_metavar() -> str:
    """``{vp,subvp,...,module:Class}`` for the usage line of an ``--sde`` option."""
    return "{" + ",".join(SHORT_NAMES) + ",module:Class}"


def sde_help() -> str:
    """The shared description of the accepted SDE names, for option help texts."""
    pairs = ", ".join(f"{short} = {cls}" for short, cls in SHORT_NAMES.items())
    return (
        f"a built-in SDE by short name or class name ({pairs}), or 'module:Name' naming your sdekit.SDE "
        "subclass (instantiated with its defaults) or instance"
    )


def _vocabulary() -> dict[str, str]:
    """Lower-cased short and class names -> class name."""
    names = {**SHORT_NAMES, **COMPONENT_NAMES}
    return {**names, **{cls.lower(): cls for cls in names.values()}}


def _is_module(name: str) -> bool:
    _cwd_importable()
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _builtin(spec: str) -> SDE:
    cls_name = _vocabulary().get(spec.lower())
    if cls_name is None:
        display = {w.lower(): w for w in [*SHORT_NAMES, *SHORT_NAMES.values()]}
        close = difflib.get_close_matches(spec.lower(), list(display), n=1, cutoff=0.75)
        if close:
            hint = f"did you mean {display[close[0]]!r}? "
        elif _is_module(spec):
            hint = f"{spec!r} is a module: pass '{spec}:Name' naming the SDE class or instance in it; or "
        else:
            hint = ""
        raise SDESpecError(
            f"not a built-in SDE; {hint}choose from {', '.join(SHORT_NAMES)} (or their classes "
            f"{', '.join(SHORT_NAMES.values())}), or pass 'module:Class' naming your sdekit.SDE subclass"
        )
    # lazy: sympy loads when an SDE is resolved, not when the CLI builds its parser
    from .symbolic import zoo

    return getattr(zoo, cls_name)()


def _cwd_importable() -> None:
    if os.getcwd() not in sys.path and "" not in sys.path:  # console scripts do not put the cwd on sys.path
        sys.path.insert(0, os.getcwd())


def _import(module_name: str, error: type[ValueError] = SDESpecError) -> Any:
    _cwd_importable()
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise error(
            f"cannot import module {module_name!r} ({err}); run from the directory that contains it or add it "
            "to PYTHONPATH"
        ) from err
    except Exception as err:
        raise error(f"importing {module_name!r} raised {type(err).__name__}: {_line(err)}") from err


def _from_module(spec: str) -> SDE:
    # lazy: sympy loads when an SDE is resolved, not when the CLI builds its parser
    from .symbolic.sde import SDE

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or ":" in attr:
        raise SDESpecError("expected 'module:Class', e.g. mypkg.sdes:MySDE")
    module = _import(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        sdes = [n for n in names if _is_sde(getattr(module, n, None), SDE)]
        close = difflib.get_close_matches(attr, sdes or names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        has = f"its SDEs: {', '.join(sdes[:12])}" if sdes else f"it has: {', '.join(names[:12]) or 'no public names'}"
        raise SDESpecError(f"module {module_name!r} has no attribute {attr!r}; {hint}{has}") from None
    if isinstance(obj, type) and issubclass(obj, SDE):
        try:
            return obj()
        except SDEDeclarationError as err:  # the declaration itself is wrong: its message says what to change
            raise SDESpecError(f"{attr}: {_line(err)}") from err
        except Exception as err:
            raise SDESpecError(
                f"{attr}() raised {type(err).__name__}: {_line(err)} (give every parameter a default, or point "
                "at an instance)"
            ) from err
    if isinstance(obj, SDE):
        return obj
    raise SDESpecError(
        f"{attr} is a {type(obj).__name__}, not a subclass of sdekit.SDE nor an instance of one; point at your SDE"
    )


def _is_sde(obj: Any, base: type) -> bool:
    return isinstance(obj, base) or (isinstance(obj, type) and issubclass(obj, base) and obj is not base)


def _line(err: BaseException) -> str:
    return " ".join(str(err).split())


def check_compiles(sde: SDE) -> None:
    """Compile what every command uses: ``drift_fn``, ``diffusion_fn``, ``dg2_dx_fn`` and, for an affine SDE,
    the marginal; raise :class:`SDESpecError` naming the first expression that does not compile.

    A declaration that sympy accepts may still use a function torch cannot evaluate (``floor``, ``gamma``,
    ...); this makes it a one-line error when the SDE is loaded instead of a traceback later in a run.
    """
    name = type(sde).__name__
    parts = (("drift f", "f", "drift_fn"), ("diffusion g", "g", "diffusion_fn"), ("d(g^2)/dx", "dg2_dx", "dg2_dx_fn"))
    for label, expr_attr, fn_attr in parts:
        try:
            getattr(sde, fn_attr)
        except Exception as err:
            raise SDESpecError(
                f"{name}: the {label} = {getattr(sde, expr_attr)} cannot be compiled to torch ({_line(err)}); "
                "rewrite it with the supported functions"
            ) from err
    if sde.is_affine:
        try:
            sde.marginal  # noqa: B018 - compiles alpha(t), m(t), sigma^2(t)
        except Exception as err:
            raise SDESpecError(
                f"{name}: its Gaussian marginal (from f = {sde.f}, g = {sde.g}) cannot be built ({_line(err)}); "
                "rewrite the coefficients with the supported functions"
            ) from err


def resolve_sde(spec: str, *, compile: bool = True) -> SDE:
    """The :class:`sdekit.SDE` named by ``spec`` (see the module docstring for the accepted forms).

    ``compile=True`` also compiles a user's SDE (:func:`check_compiles`); the zoo's SDEs are known to compile.

    Raises:
        SDESpecError: one line saying what was wrong and what to pass instead.
    """
    spec = spec.strip()
    if not spec:
        raise SDESpecError(f"empty SDE name; choose from {', '.join(SHORT_NAMES)} or pass 'module:Class'")
    if ":" not in spec:
        return _builtin(spec)
    sde = _from_module(spec)
    if compile:
        check_compiles(sde)
    return sde


def resolve_affine_sde(spec: str, why: str) -> SDE:
    """:func:`resolve_sde`, refusing a non-affine SDE with an :class:`SDESpecError` that ends with ``why`` (what the
    command needs the Gaussian marginal for and what to pass)."""
    sde = resolve_sde(spec)
    if not sde.is_affine:
        raise SDESpecError(f"{type(sde).__name__} is not affine (drift a(t) x + b(t), diffusion free of x); {why}")
    return sde


def _zero_argument(obj: Any) -> bool:
    """Whether ``obj(x, t)`` cannot be called but ``obj()`` can (a factory given without its parentheses)."""
    # lazy: inspect only on the model path
    import inspect

    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(None, None)
    except TypeError:
        try:
            sig.bind()
        except TypeError:
            return False
        return True
    return False


def resolve_model(spec: str) -> Any:
    """The model callable named by ``spec``: ``module:name`` (the model itself) or ``module:factory()``.

    ``module:name`` must be a callable ``model(x, t)`` that is not a class (a function, a ``torch.nn.Module``
    instance, an object with ``__call__``). ``module:factory()`` calls ``factory`` with no arguments (a function
    or a class) and returns its result, which must be callable. Only the syntax ``name()`` is understood: no
    arguments, no dotted paths.

    Raises:
        ModelSpecError: one line saying what was wrong and what to pass instead (module not importable,
            attribute missing, with the closest names of the module, not callable, a class without ``()``, a
            factory given without ``()``, a factory that raised or returned something not callable).
    """
    spec = spec.strip()
    module_name, _, attr = spec.partition(":")
    factory = attr.endswith("()")
    name = attr[:-2] if factory else attr
    if not module_name or not name.isidentifier():
        raise ModelSpecError("expected 'module:name' (the model(x, t) itself) or 'module:factory()', e.g. mypkg:model")
    module = _import(module_name, ModelSpecError)
    try:
        obj = getattr(module, name)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        callables = [n for n in names if callable(getattr(module, n, None))]
        close = difflib.get_close_matches(name, callables or names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        has = f"its callables: {', '.join(callables[:12])}" if callables else "it has no public callables"
        raise ModelSpecError(f"module {module_name!r} has no attribute {name!r}; {hint}{has}") from None
    if not callable(obj):
        raise ModelSpecError(
            f"{name} is a {type(obj).__name__}, not callable; point at the model(x, t) itself or at a factory "
            f"with '{module_name}:factory()'"
        )
    if not factory:
        if isinstance(obj, type):
            raise ModelSpecError(
                f"{name} is a class; pass '{module_name}:{name}()' to instantiate it (with no arguments), or point "
                "at an instance"
            )
        if _zero_argument(obj):
            raise ModelSpecError(
                f"{name} takes no arguments, so it cannot be model(x, t); if it builds the model, pass "
                f"'{module_name}:{name}()'"
            )
        return obj
    try:
        model = obj()
    except Exception as err:
        raise ModelSpecError(f"{name}() raised {type(err).__name__}: {_line(err)}") from err
    if not callable(model):
        raise ModelSpecError(f"{name}() returned a {type(model).__name__}, not a callable model(x, t)")
    return model
