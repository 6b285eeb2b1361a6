"""
The API reference cannot fall behind the code: every public name (the ``__all__`` of each
documented package) has a docstring (a ``#:`` comment for a constant) and an ``auto*`` entry in
docs/api/*.rst, every entry names a real object, and public callables that take tensors say
their shapes.
"""

import importlib
import inspect
import re

import pytest
from conftest import REPO_ROOT

API = REPO_ROOT / "docs" / "api"
PACKAGES = [
    "pyro_seq.models",
    "pyro_seq.guides",
    "pyro_seq.losses",
    "pyro_seq.distributions",
    "pyro_seq.bounds",
    "pyro_seq.fivo",
    "pyro_seq.diagnostics",
    "pyro_seq.data",
    "pyro_seq.training",
    "pyro_seq.recipes",
    "pyro_seq.contrib.protein",
    "pyro_seq.contrib.spatial",
]
DIRECTIVE = re.compile(r"^\.\. auto(class|function|data|exception|module):: (\S+)", re.M)
# parameters that are tensors wherever they appear in a public signature
TENSOR_PARAMS = {
    "x", "mask", "z", "y", "images", "tokens", "log_weights", "x_labelled", "x_unlabelled",
}
# a shape as the docstrings write them: ``[batch, time, x_dim]``, ``[..., D]``, ``[N, 1, H, W]``
SHAPE = re.compile(r"\[(\.\.\.|[A-Za-z_]\w*|\d+)(,\s*[^\]]+)?\]|\bshapes?\b")


def resolve(target):
    # as autodoc does: the longest importable module before the last name, then attributes (so
    # pyro_seq.data.image_batches is the function the package exports, not its submodule)
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(target)


def entries():
    found = []
    for rst in sorted(API.glob("*.rst")):
        found += [(rst.name, kind, target) for kind, target in DIRECTIVE.findall(rst.read_text())]
    return found


def public_names():
    for package in PACKAGES:
        module = importlib.import_module(package)
        assert hasattr(module, "__all__"), f"{package} has no __all__"
        for name in module.__all__:
            yield package, name


def has_doc_comment(module_name, name):
    source = inspect.getsource(importlib.import_module(module_name))
    return re.search(rf"^#:.*\n(#:.*\n)*{re.escape(name)}\s*(:[^=\n]*)?=", source, re.M) is not None


def test_every_entry_names_an_object():
    assert entries()
    for page, kind, target in entries():
        # raises for a name that is gone
        importlib.import_module(target) if kind == "module" else resolve(target)


def test_every_public_name_is_documented_and_listed():
    listed = {}
    for page, kind, target in entries():
        if kind != "module":
            listed.setdefault(id(resolve(target)), []).append((kind, target))
    missing, undocumented = [], []
    for package, name in public_names():
        obj = getattr(importlib.import_module(package), name)
        where = listed.get(id(obj))
        if not where:
            missing.append(f"{package}.{name}")
            continue
        if inspect.isclass(obj) or inspect.isroutine(obj):
            doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
            ok = bool(doc and doc.strip())
        else:  # a constant: a `#:` comment above its assignment, in the module the entry names
            modules = [t.rpartition(".")[0] for kind, t in where if kind == "data"]
            ok = any(has_doc_comment(m, name) for m in modules)
        if not ok:
            undocumented.append(f"{package}.{name}")
    assert not missing, f"public names with no entry in docs/api/*.rst: {missing}"
    assert not undocumented, f"public names without a docstring (or #: comment): {undocumented}"


def shape_doc(obj):
    """The parameters of a public callable that are tensors, and the text that documents them."""
    if inspect.isclass(obj):
        methods = [m for m in ("__init__", "forward", "__call__") if m in vars(obj)]
        params, text = set(), obj.__doc__ or ""
        for m in methods:
            try:
                params |= set(inspect.signature(getattr(obj, m)).parameters)
            except (TypeError, ValueError):
                continue
            text += getattr(obj, m).__doc__ or ""
        return params & TENSOR_PARAMS, text
    return set(inspect.signature(obj).parameters) & TENSOR_PARAMS, obj.__doc__ or ""


@pytest.mark.parametrize("package", PACKAGES)
def test_callables_that_take_tensors_give_shapes(package):
    module = importlib.import_module(package)
    unshaped = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)) or (
            inspect.isclass(obj) and issubclass(obj, BaseException)
        ):
            continue
        params, text = shape_doc(obj)
        if params and not SHAPE.search(text):
            unshaped.append(f"{name} ({', '.join(sorted(params))})")
    assert not unshaped, f"docstrings that take tensors but give no shape: {unshaped}"
