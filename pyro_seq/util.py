"""Input checks shared by every pyro_seq model, guide and loss."""

import math
import numbers
import weakref

import torch


# ---------------------------------------------------------------------------------------------
# Numeric arguments
# ---------------------------------------------------------------------------------------------


def _range_text(low, high, low_open=False, high_open=False):
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_int(name, value, minimum=None, maximum=None):
    """
    ``value`` as an ``int`` if it is an integer (a Python or NumPy integer, or an integral
    0-dimensional tensor; not a bool) in ``[minimum, maximum]`` (either bound optional).

    :raises ValueError: naming ``name`` and the allowed range.
    """
    if torch.is_tensor(value) and value.dim() == 0 and not value.dtype.is_floating_point and value.dtype != torch.bool:
        value = int(value)
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if ok:
        value = int(value)
        ok = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = _range_text(minimum, maximum)
        raise ValueError(f"{name} must be an integer{' ' + bounds if bounds else ''}, got {value!r}")
    return value


def check_real(name, value, low=None, high=None, low_open=False, high_open=False, allow_inf=False):
    """
    ``value`` as a ``float`` if it is a real number (not a bool) in the range given by ``low`` /
    ``high`` (either optional; ``*_open`` excludes the end point), finite unless ``allow_inf``.
    NaN is never accepted.

    :raises ValueError: naming ``name`` and the allowed range.
    """
    if torch.is_tensor(value) and value.dim() == 0 and value.dtype != torch.bool:
        value = value.item()
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if ok:
        value = float(value)
        ok = not math.isnan(value) and (allow_inf or math.isfinite(value))
        ok = ok and (low is None or (value > low if low_open else value >= low))
        ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = _range_text(low, high, low_open, high_open)
        what = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{name} must be {what}{' ' + bounds if bounds else ''}, got {value!r}")
    return value


def check_probability(name, value, low_open=False, high_open=False):
    """``value`` as a ``float`` in ``[0, 1]`` (ends excluded by ``low_open`` / ``high_open``); see :func:`check_real`."""
    return check_real(name, value, 0.0, 1.0, low_open, high_open)


def check_sizes(name, values, minimum=1):
    """
    A non-empty sequence of integers ``>= minimum`` (layer widths), as a tuple of ``int``.

    :raises ValueError: naming ``name``, the faulty entry and the allowed range.
    """
    if torch.is_tensor(values) or isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a non-empty sequence of integers >= {minimum}, got {values!r}")
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty sequence of integers >= {minimum}, got {values!r}")
    return tuple(check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(values))


def check_weight(name, value):
    """A non-negative finite weight, or a callable schedule (returned as is); see :func:`check_real`."""
    if callable(value):
        return value
    return check_real(name, value, 0.0)


def _magnitude_limit(dtype):
    """Largest ``|x|`` a Gaussian likelihood can score in ``dtype`` without overflow:
    the fourth root of the dtype's largest value (about 4.3e9 for float32), which leaves
    room for the squared, scaled and summed residuals."""
    return torch.finfo(dtype).max ** 0.25


def _values(t, limit=5):
    """A short description of the distinct values of ``t`` (for error messages)."""
    values = torch.unique(t.detach().flatten().cpu())
    shown = ", ".join(f"{v:g}" for v in values[:limit].tolist())
    return f"[{shown}{', ...' if values.numel() > limit else ''}]"


def check_mask_values(mask, name="mask"):
    """
    A bool copy of a bool or 0/1 ``mask``.

    :raises TypeError: ``mask`` is not a tensor.
    :raises ValueError: ``mask`` holds values other than 0 and 1 (NaN included).
    """
    if not torch.is_tensor(mask):
        raise TypeError(
            f"{name} must be a torch.Tensor (bool or 0/1) or None, got {type(mask).__name__}"
        )
    if mask.dtype == torch.bool:
        return mask
    bad = ~((mask == 0) | (mask == 1))
    if bool(bad.any()):
        raise ValueError(
            f"{name} must be boolean or 0/1 (dtype {mask.dtype}); found values {_values(mask[bad])}"
        )
    return mask.bool()


def module_tensor(module):
    """
    A parameter (else a buffer) of ``module``, read without Pyro's parameter
    registration, whose dtype and device inputs must match; ``None`` if it has none.
    """
    for t in torch.nn.Module.parameters(module):
        return t
    for t in torch.nn.Module.buffers(module):
        return t
    return None


def check_dtype_device(x, like, name="x"):
    """Raise :class:`ValueError` unless ``x`` has the dtype and device of ``like`` (if given)."""
    if like is None:
        return
    if x.dtype != like.dtype:
        raise ValueError(
            f"{name} has dtype {x.dtype} but the model's parameters are {like.dtype}: "
            f"convert with {name}.to({like.dtype})"
        )
    if x.device != like.device:
        raise ValueError(
            f"{name} is on device {x.device} but the model is on {like.device}: "
            f"move it with {name}.to({str(like.device)!r})"
        )


def check_int_labels(y, shape, low, high, name, what, note="", shape_note=""):
    """
    ``None`` or an integer tensor of ``shape`` with values in ``low .. high``, returned as int64.

    :param str note: appended to the message for values out of range.
    :param str shape_note: appended to the expected shape in the message for a wrong shape.
    :raises TypeError: ``y`` is not a tensor.
    :raises ValueError: wrong dtype, shape or values, naming the offending rows or entries.
    """
    if y is None:
        return None
    if not torch.is_tensor(y):
        raise TypeError(f"{name} must be a torch.Tensor of {what} or None, got {type(y).__name__}")
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{name} must hold integer {what} (e.g. torch.long), got dtype {y.dtype}")
    if tuple(y.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}{shape_note}, got shape {tuple(y.shape)}")
    bad = (y < low) | (y > high)
    if bool(bad.any()):
        where = torch.nonzero(bad)[:10]  # [n_bad, y.dim()]
        where = where.flatten().tolist() if y.dim() == 1 else [tuple(i) for i in where.tolist()]
        raise ValueError(
            f"{name} must hold {what} in {low}..{high}{note}; "
            f"{'rows' if y.dim() == 1 else 'entries'} {where} hold {y[bad][:10].tolist()}"
        )
    return y.long()


def check_values(x, binary=False, name="x", hint=""):
    """
    The values of a floating-point data tensor: finite, and 0/1 for a Bernoulli likelihood
    (``binary``) or below :math:`\\max(\\text{dtype})^{1/4}` in magnitude for a Gaussian one.

    :param str hint: appended to the message for non-binary values.
    :raises ValueError: naming ``name`` and the offending values.
    """
    if binary:
        if bool(((x == 0) | (x == 1)).all()):  # one pass when the data are fine
            return
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf values")
        raise ValueError(
            f"{name} must be binary (0/1) for a Bernoulli likelihood; "
            f"found values in [{x.min().item():g}, {x.max().item():g}]{hint}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")
    limit, largest = _magnitude_limit(x.dtype), x.abs().max().item()
    if largest > limit:
        raise ValueError(
            f"{name} has values of magnitude up to {largest:g}; {x.dtype} likelihoods overflow "
            f"beyond {limit:g}: standardise or rescale the data"
        )


def check_sequences(x, mask=None, x_dim=None, binary=False, name="x", like=None):
    """
    Validate a padded batch of sequences and return ``(x, mask, lengths)``.

    :param torch.Tensor x: ``[batch, time, x_dim]`` floating point frames.
    :param torch.Tensor mask: optional ``[batch, time]`` bool (or 0/1) mask whose
        True entries form a prefix of each row; all True if omitted.
    :param int x_dim: expected frame size, if known.
    :param torch.Tensor like: a model parameter; ``x`` must have its dtype and device.
    :param bool binary: require 0/1 values (Bernoulli likelihoods); otherwise the
        magnitude of ``x`` must stay below :math:`\\max(\\text{dtype})^{1/4}` (about
        4.3e9 in float32), beyond which Gaussian log-densities overflow to ``inf``/NaN.
    :raises TypeError: ``x`` or ``mask`` is not a tensor.
    :raises ValueError: naming the argument, the expected and the actual
        shape, dtype or range.
    :returns: ``x``, a bool ``mask [batch, time]`` and ``lengths [batch]``.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(
            f"{name} must have shape [batch, time, x_dim], got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {x.dtype}")
    check_dtype_device(x, like, name)
    batch, time, dim = x.shape
    if batch == 0 or time == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if x_dim is not None and dim != x_dim:
        raise ValueError(
            f"{name} has frames of size {dim} but the model expects x_dim={x_dim}"
        )
    check_values(x, binary, name)
    if mask is None:
        mask = torch.ones(batch, time, dtype=torch.bool, device=x.device)
    else:
        if not torch.is_tensor(mask):
            raise TypeError(
                f"mask must be a torch.Tensor of shape [batch, time] = {(batch, time)} or None, "
                f"got {type(mask).__name__}"
            )
        if mask.shape != (batch, time):
            raise ValueError(
                f"mask must have shape [batch, time] = {(batch, time)}, got {tuple(mask.shape)}"
            )
        if mask.device != x.device:
            raise ValueError(f"mask is on device {mask.device} but {name} is on {x.device}")
        mask = check_mask_values(mask)
    lengths = mask.sum(-1)  # [batch]
    if (lengths == 0).any():
        bad = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(
            f"mask rows {bad[:10]} are all False: sequences of length 0 are not allowed "
            "(every sequence needs at least one frame)"
        )
    prefix = torch.arange(time, device=mask.device) < lengths.unsqueeze(-1)
    if not torch.equal(prefix, mask):
        bad = torch.nonzero((prefix != mask).any(-1)).flatten().tolist()
        raise ValueError(
            "mask must be a prefix mask (True for the first L_b steps of row b, "
            f"then False): right-pad ragged sequences; rows {bad[:10]} are not"
        )
    return x, mask, lengths


def check_batch(x, mask=None, name="x"):
    """
    Model-independent checks of a batch before it is repeated or split (the
    importance-sampling and particle bounds): ``x`` is a tensor of shape
    ``[batch, time, x_dim]`` (or ``[batch, x_dim]``, images) with at least one
    row and frame, and ``mask``, if given, a tensor of shape ``[batch, time]``
    (``[batch]`` or ``[batch, 1]`` for 2-D images). The model's own ``check``
    does the rest.

    :returns: ``(batch, time)``, ``time = 1`` for 2-D ``x``.
    :raises TypeError: ``x`` or ``mask`` is not a tensor.
    :raises ValueError: wrong rank or empty ``x``, ``mask`` of the wrong shape.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise ValueError(
            f"{name} must have shape [batch, time, x_dim] (or [batch, x_dim] for images), "
            f"got shape {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    batch, time = x.shape[0], (x.shape[1] if x.dim() == 3 else 1)
    if mask is not None:
        expected = [(batch, time)] if x.dim() == 3 else [(batch,), (batch, 1)]
        if not torch.is_tensor(mask):
            raise TypeError(
                f"mask must be a torch.Tensor of shape {expected[-1]} or None, "
                f"got {type(mask).__name__}"
            )
        if tuple(mask.shape) not in expected:
            raise ValueError(
                f"mask must have shape {' or '.join(map(str, expected))} to match {name} of shape "
                f"{tuple(x.shape)}, got {tuple(mask.shape)}"
            )
    return batch, time


def record(name, value, event_dim=1):
    """
    Record a tensor in the enclosing Pyro trace without adding it to any bound:
    an observed, fully masked ``Delta`` site marked auxiliary (so that
    :class:`~pyro.infer.TraceMeanField_ELBO` accepts it in a guide). Used by guides
    for the Z-Forcing auxiliary terms, which losses read from the guide trace
    (``guide_trace.nodes[name]["value"]``); the value keeps its autograd graph.

    :param str name: site name.
    :param torch.Tensor value: ``[batch, ...]`` inside the batch plate.
    :param int event_dim: dims of ``value`` right of the plate dims.
    """
    import pyro
    import pyro.distributions as dist

    return pyro.sample(
        name,
        dist.Delta(value, event_dim=event_dim).mask(False),
        obs=value,
        infer={"is_auxiliary": True, "_deterministic": True},
    )


class GuideModelCache:
    r"""
    Hands a value the guide computed to the *next* model call on the same data,
    so one ELBO evaluation (guide, then the model replayed on its samples) runs
    a shared deterministic computation once: SRNN's :math:`d_{1:T}`, Z-Forcing's
    forward LSTM path, the Ladder VAE's top-down prior parameters. Sharing
    also means one dropout mask and one batch-norm update per SVI step.

    :meth:`take` returns the stored value only when it is asked for with the
    very ``x`` tensor it was stored with, the parameters of ``modules`` (the
    modules the value depends on) have not changed in place since (their
    ``_version`` counters), and the grad mode is the same; any other call gets
    ``None`` and the caller recomputes. The entry is consumed by the first
    :meth:`take`.
    """

    def __init__(self):
        self._entry = None

    @staticmethod
    def _version(modules):
        return tuple(p._version for m in modules for p in m.parameters())

    def put(self, x, value, modules):
        """Keep ``value`` (computed from ``x`` with ``modules``) for the next :meth:`take` on ``x``."""
        self._entry = (x, self._version(modules), torch.is_grad_enabled(), value)

    def take(self, x, modules):
        """The value stored for ``x`` if still valid, else ``None``."""
        entry, self._entry = self._entry, None
        if entry is None:
            return None
        cached_x, version, grad_mode, value = entry
        if cached_x is x and grad_mode == torch.is_grad_enabled() and version == self._version(modules):
            return value
        return None


# ---------------------------------------------------------------------------------------------
# Calls with and without data
# ---------------------------------------------------------------------------------------------


def _check_count(value, name):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def check_call_shape(batch, time, num_steps=None, batch_size=None, name="x"):
    """
    Check the optional ``num_steps`` and ``batch_size`` keywords of a call on data
    ``[batch, time, ...]``: they must agree with the data, and under ``torch.jit.trace``
    (``pyro.infer.JitTrace_ELBO``) both must be given.

    ``JitTrace_ELBO`` compiles one graph per set of keyword arguments and replays it for
    any later tensor arguments; the sequence models unroll their time loop while tracing,
    so a graph is only valid for the shape it was traced with. Passing the shape as
    keywords gives every batch shape its own graph.

    :raises ValueError: a keyword disagrees with the data, or is missing under tracing.
    """
    _check_count(num_steps, "num_steps")
    _check_count(batch_size, "batch_size")
    if num_steps is not None and num_steps != time:
        raise ValueError(f"num_steps={num_steps} but {name} has {time} steps")
    if batch_size is not None and batch_size != batch:
        raise ValueError(f"batch_size={batch_size} but {name} holds {batch} sequences")
    missing = [k for k, v in (("num_steps", num_steps), ("batch_size", batch_size)) if v is None]
    if torch.jit.is_tracing() and missing:
        raise ValueError(
            f"under JitTrace_ELBO pass {' and '.join(missing)} as keyword arguments (e.g. svi.step(x, mask, "
            "num_steps=x.shape[1], batch_size=x.shape[0])) so that Pyro compiles one graph per batch shape, "
            "since a traced graph is only valid for the shapes it was traced with"
        )


def prior_call_shape(mask=None, num_steps=None, batch_size=None):
    """
    ``(batch, time)`` of a call without data, ``model(None, mask, num_steps=T, batch_size=B)``:
    from ``mask [batch, time]`` if given (the keywords must then agree with it), else from the
    keywords, which are then both required.

    :raises TypeError: ``mask`` is neither ``None`` nor a tensor.
    :raises ValueError: the shape is missing, not positive, or inconsistent.
    """
    _check_count(num_steps, "num_steps")
    _check_count(batch_size, "batch_size")
    if mask is None:
        if num_steps is None or batch_size is None:
            raise ValueError(
                "without data (x=None) the model samples new sequences: pass num_steps and batch_size "
                "(or a mask [batch, time])"
            )
        return batch_size, num_steps
    if not torch.is_tensor(mask):
        raise TypeError(f"mask must be a torch.Tensor of shape [batch, time] or None, got {type(mask).__name__}")
    if mask.dim() != 2:
        raise ValueError(f"mask must have shape [batch, time], got {tuple(mask.shape)}")
    batch, time = mask.shape
    check_call_shape(batch, time, num_steps, batch_size, name="mask")
    return batch, time


# ---------------------------------------------------------------------------------------------
# Pyro names of modules
# ---------------------------------------------------------------------------------------------

_NAME_DIVIDER = "$$$"  # pyro.params.param_store's divider between a pyro.module name and a parameter path

#: Every parameter a :class:`PyroNamed` module has held (by id): tells another module's
#: parameters in the param store from values loaded into it.
_OWNED_PARAMETERS = weakref.WeakValueDictionary()


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def pyro_param_names(module, prefix=None):
    """
    The param-store name of every parameter of a :class:`~pyro.nn.PyroModule` whose children
    are plain :class:`torch.nn.Module` s (registered with ``pyro.module``) or ``PyroModule`` s,
    as :class:`~pyro.nn.PyroModule` names them when it runs.

    :param prefix: the module's Pyro name (default: its current one); ``""`` gives the names
        relative to the module, the same in every instance.
    :returns: a list of ``(name, parameter)``.
    """
    from pyro.nn import PyroModule

    prefix = module._pyro_name if prefix is None else prefix
    names = [(_join(prefix, n), p) for n, p in module._parameters.items() if p is not None]
    for child_name, child in module._modules.items():
        if child is None:
            continue
        full = _join(prefix, child_name)
        if isinstance(child, PyroModule):
            names += pyro_param_names(child, full)
        else:
            names += [(f"{full}{_NAME_DIVIDER}{n}", p) for n, p in child.named_parameters()]
    return names


def claim_pyro_name(module):
    """Fix the Pyro name of a :class:`PyroNamed` module now (a no-op for any other module); returns it."""
    if isinstance(module, PyroNamed):
        module.sync_pyro_params(sync=False)
    return getattr(module, "_pyro_name", "")


class PyroNamed:
    r"""
    Mixin of the built-in :class:`~pyro.nn.PyroModule` models and guides: every instance
    has its own Pyro name, so that the parameters of two models in one process never share
    an entry in Pyro's param store, and values loaded into the store reach the module.

    A :class:`~pyro.nn.PyroModule` registers each ``nn.Parameter`` with ``pyro.param`` under
    ``"{name}.{attribute}"``, but computes with its own tensor: if another module already holds
    that name in the store, SVI's optimiser steps the other module's tensor and this one never
    trains, silently. Here the name is fixed on the module's first run (its first ``forward``
    or step-protocol call, or :func:`claim_pyro_name`):

    - a ``name`` given to the constructor is used as is;
    - otherwise the class default (``"srnn"``; a guide: its model's name + ``"_guide"``), or,
      if parameters of another such module hold that name in the param store, the default
      with the first free suffix ``_1``, ``_2``, … A cleared store
      (``pyro.clear_param_store()``) frees every name.

    On every run the module then checks the store (one look-up when nothing changed):

    - a value under one of its names that no module owns, such as one put there by
      ``pyro.get_param_store().load(path)``, is copied into the module's parameter (Pyro's
      rule that the store's value of a name wins);
    - a parameter of another module under one of its names (two modules given one name, or
      a name taken again after a cleared store) is replaced by the module's own, which
      keeps its values.

    The param store then holds the module's own parameter tensors.
    """

    #: Default Pyro name of instances built with ``name=None``.
    default_pyro_name = None

    def _init_pyro_name(self, name):
        """Call right after ``PyroModule.__init__``: ``name`` as given, or ``None`` for a free default."""
        if name is not None and (not isinstance(name, str) or not name or _NAME_DIVIDER in name):
            raise ValueError(f"name must be a non-empty string without {_NAME_DIVIDER!r} or None, got {name!r}")
        self._pyro_name_given = name
        self._pyro_name_claimed = name is not None
        self._pyro_probe = None  # (store name, parameter path) of the first parameter

    def _pyro_base_name(self):
        """The default name before any suffix."""
        return self.default_pyro_name

    def _pyro_dependencies(self):
        """The :class:`PyroNamed` modules whose parameters this one computes with (a guide's model)."""
        if not isinstance(getattr(type(self), "model", None), property):
            return ()
        model = self.model
        return (model,) if isinstance(model, PyroNamed) else ()

    def _claim_pyro_name(self, store):
        base = self._pyro_base_name()
        own = {id(p) for p in torch.nn.Module.parameters(self)}
        taken = {
            name
            for name, value in store._params.items()
            if id(value) not in own and _OWNED_PARAMETERS.get(id(value)) is value
        }
        name, k = base, 0
        while any(n.startswith(name + ".") for n in taken):
            k += 1
            name = f"{base}_{k}"
        self._pyro_name = name
        self._pyro_name_claimed = True

    def sync_pyro_params(self, sync=True):
        """
        Fix the module's Pyro name if not yet done, and (``sync``) make the param store hold
        the module's own parameters (see the class notes). Models and guides call it on
        every run; it costs one dictionary look-up when the store is as the module left it.
        """
        import pyro

        for module in self._pyro_dependencies():  # a guide computes with its model's parameters too
            module.sync_pyro_params(sync)
        store = pyro.get_param_store()
        if not self._pyro_name_claimed:
            self._claim_pyro_name(store)
        if not sync:
            return
        probe = self._pyro_probe
        if probe is not None:
            current = store._params.get(probe[0])
            if current is None or current is _raw_parameter(self, probe[1]):
                return
        self._sync_all(store)

    def _sync_all(self, store):
        names = pyro_param_names(self)
        relative = pyro_param_names(self, "")
        if names:
            self._pyro_probe = (names[0][0], _parameter_path(self, names[0][1]))
        for (name, param), (rel, _) in zip(names, relative):
            _OWNED_PARAMETERS[id(param)] = param
            current = store._params.get(name)
            if current is None or current is param:
                continue
            if _OWNED_PARAMETERS.get(id(current)) is not current:  # a loaded value: adopt it
                if current.shape != param.shape:
                    raise ValueError(
                        f"the param store holds {name!r} of shape {tuple(current.shape)} but this "
                        f"{type(self).__name__}'s {rel!r} has shape {tuple(param.shape)}: load a store "
                        "saved from a model and guide of the same configuration"
                    )
                with torch.no_grad():
                    param.copy_(current)
            store._param_to_name.pop(current, None)
            store._params[name] = param
            store._param_to_name[param] = name


def _parameter_path(module, param):
    for path, p in torch.nn.Module.named_parameters(module):
        if p is param:
            return path
    return None


def _raw_parameter(module, path):
    """The parameter at ``path`` ("a.b.weight"), read without PyroModule's attribute hooks."""
    if path is None:
        return None
    *children, name = path.split(".")
    for child in children:
        module = module._modules.get(child)
        if module is None:
            return None
    return module._parameters.get(name)
