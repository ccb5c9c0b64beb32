"""Per-patient gradient clipping in one backward pass ("book-keeping" clipping).

DP-SGD needs Σ_n clip_C(∇ℓ_n): each patient's gradient scaled to norm ≤ C, then summed.
Opacus' hooks mode materialises every per-patient gradient ([N, out, in] per layer) and
its ghost mode runs backward twice; both cost several plain steps on our denoiser. For the
layers the denoiser is made of, the clipped sum needs neither (Bu et al. 2023,
"Differentially Private Optimization on Large Model at Small Cost", ICML — book-keeping):

1. forward hooks keep each layer's input a [N, S, in] (S: positions of one patient: noise
   draws, windows, channels);
2. one ``autograd.grad`` of Σ_n ℓ_n with respect to the layers' *outputs* gives
   g = ∂ℓ_n/∂out [N, S, out] (the patient's loss reaches only its own rows) — autograd
   skips the weight-gradient products, nobody asked for them;
3. each layer's share of ‖∇ℓ_n‖², from a and g alone:

   - Linear weight: ‖a_nᵀ g_n‖²_F = Σ_{s,s'} (a_s·a_{s'})(g_s·g_{s'}) ("ghost norm",
     cost S²(in+out)) or, when cheaper, by forming a_nᵀ g_n (cost S·in·out);
     bias: ‖Σ_s g_s‖²;
   - LayerNorm: weight Σ_s x̂_s ⊙ g_s, bias Σ_s g_s (x̂ recomputed from the input);
   - Embedding: rows indexed by the patient's ids, Σ_{s,s'} [id_s = id_{s'}] (g_s·g_{s'});

4. c_n = min(1, C / (‖∇ℓ_n‖ + 10⁻⁶)) (Opacus' factor) and each parameter's gradient
   Σ_n c_n ∇_θ ℓ_n = one product per layer with g scaled by c — the same product a plain
   backward computes.

A frozen parameter (``requires_grad`` off) is neither part of the norm nor given a gradient: a
Linear layer whose weight is frozen and whose bias trains counts and updates the bias alone. (Setting
the frozen weight's gradient would hand an optimizer that holds it a clipped but un-noised update.)

So a private step costs one forward, one input-gradient backward, the weight products and
the norms: close to a plain step. The result equals Opacus' per-sample clipping to float
rounding (tests compare them on the denoiser). Any parameter outside these layer types, a
layer called twice in one forward, or a non-batch-first input is refused: the norms would
be wrong, and with them the guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Linear, nn.LayerNorm, nn.Embedding)


@dataclass
class _Record:
    module: nn.Module
    inputs: torch.Tensor | None = None
    output: torch.Tensor | None = None
    calls: int = 0
    params: list[nn.Parameter] = field(default_factory=list)


class PerPatientClipping(nn.Module):
    """Wraps a model so that :meth:`backward` leaves Σ_n clip_C(∇ℓ_n) in ``p.grad``.

    Use with Opacus' ``DPOptimizerFastGradientClipping`` (noise on ``p.grad``, which must
    already hold the clipped sum) and its Poisson ``DPDataLoader``.
    """

    def __init__(self, module: nn.Module, *, clip_norm: float) -> None:
        super().__init__()
        if not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        self._module = module
        self.clip_norm = float(clip_norm)
        self._records: list[_Record] = []
        owned: set[int] = set()
        for name, sub in module.named_modules():
            direct = [p for p in sub.parameters(recurse=False) if p.requires_grad]
            if not direct:
                continue
            if not isinstance(sub, SUPPORTED):
                raise ValueError(f"layer {name or '(root)'} ({type(sub).__name__}) has parameters but per-patient "
                                 f"clipping supports only {', '.join(t.__name__ for t in SUPPORTED)}")
            _check_layer(name, sub)
            record = _Record(sub, params=direct)
            sub.register_forward_hook(self._hook(record))
            self._records.append(record)
            owned.update(id(p) for p in direct)
        missing = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in owned]
        if missing:
            raise ValueError(f"parameters outside supported layers: {', '.join(missing)}")

    @staticmethod
    def _hook(record: _Record):
        def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if not torch.is_grad_enabled():
                return
            record.calls += 1
            record.inputs, record.output = args[0], output

        return keep

    def forward(self, *args, **kwargs):
        # the records are cleared by backward, not here: a layer may run before the forward
        # (the learned schedule shift noises x_t before the network sees it)
        return self._module(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._module, name)

    def backward(self, per_patient_loss: torch.Tensor) -> torch.Tensor:
        """Set ``p.grad`` = Σ_n c_n ∇ℓ_n for every parameter; return the norms ‖∇ℓ_n‖ [N]."""
        if per_patient_loss.dim() != 1:
            raise ValueError("backward wants one loss per patient, shape [N]")
        n = per_patient_loss.shape[0]
        used = [r for r in self._records if r.calls]
        for r in used:
            if r.calls > 1:
                raise RuntimeError(f"{type(r.module).__name__} ran {r.calls} times in one step: per-patient "
                                   "norms need one call per layer")
            if r.output.shape[0] != n or (torch.is_tensor(r.inputs) and r.inputs.shape[0] != n):
                raise RuntimeError(f"{type(r.module).__name__} input is not batch-first ({tuple(r.output.shape)} "
                                   f"for {n} patients)")
        grads = torch.autograd.grad(per_patient_loss.sum(), [r.output for r in used], allow_unused=True) if n else []
        with torch.no_grad():
            return self._clip(n, used, grads)

    def _clip(self, n: int, used: list[_Record], grads) -> torch.Tensor:
        for r in self._records:
            for p in r.params:
                p.grad = None
        layers = [(r, _flat(r.inputs, r.module), _flat_out(g, r.output)) for r, g in zip(used, grads)]
        squared = torch.zeros(n, dtype=torch.float32)
        for r, a, g in layers:
            if g is not None:
                squared += _norm_squared(r.module, a, g)
        norms = squared.sqrt()
        factor = (self.clip_norm / (norms + 1e-6)).clamp(max=1.0)
        for r, a, g in layers:
            if g is not None:
                _set_grads(r.module, a, g * factor[:, None, None])
        for r in self._records:
            for p in r.params:
                if p.grad is None:  # layer unused in this forward
                    p.grad = torch.zeros_like(p)
            r.calls, r.inputs, r.output = 0, None, None
        return norms


def _check_layer(name: str, layer: nn.Module) -> None:
    if isinstance(layer, nn.Embedding) and (layer.max_norm is not None or layer.padding_idx is not None
                                            or layer.sparse or layer.scale_grad_by_freq):
        raise ValueError(f"embedding {name}: max_norm, padding_idx, sparse and scale_grad_by_freq are not supported")
    if isinstance(layer, nn.LayerNorm) and len(layer.normalized_shape) != 1:
        raise ValueError(f"layer norm {name}: only normalisation over the last dimension is supported")


def _flat(inputs: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """[N, ..., in] → [N, S, in]; embedding ids [N, ...] → [N, S]."""
    if isinstance(layer, nn.Embedding):
        return inputs.reshape(inputs.shape[0], -1)
    return inputs.reshape(inputs.shape[0], -1, inputs.shape[-1])


def _flat_out(grad: torch.Tensor | None, output: torch.Tensor) -> torch.Tensor | None:
    return None if grad is None else grad.reshape(output.shape[0], -1, output.shape[-1])


def _norm_squared(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """This layer's part of ‖∇ℓ_n‖², [N]."""
    if isinstance(layer, nn.Linear):
        s, fan_in, fan_out = a.shape[1], a.shape[2], g.shape[2]
        if not layer.weight.requires_grad:  # a frozen weight (requires_grad off): only the bias is trained
            total = torch.zeros(a.shape[0])
        elif s == 1:
            total = a.square().sum((1, 2)) * g.square().sum((1, 2))
        elif s * (fan_in + fan_out) < fan_in * fan_out:  # ghost norm
            total = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))
        else:
            total = torch.bmm(g.transpose(1, 2), a).square().sum((1, 2))
        if layer.bias is not None and layer.bias.requires_grad:
            total = total + g.sum(1).square().sum(1)
        return total
    if isinstance(layer, nn.LayerNorm):
        total = torch.zeros(a.shape[0])
        if layer.weight is not None and layer.weight.requires_grad:
            total = total + (_normalised(layer, a) * g).sum(1).square().sum(1)
        if layer.bias is not None and layer.bias.requires_grad:
            total = total + g.sum(1).square().sum(1)
        return total
    same = a[:, :, None] == a[:, None, :]  # Embedding: [N, S, S]
    return (torch.bmm(g, g.transpose(1, 2)) * same).sum((1, 2))


def _set_grads(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> None:
    """Set each parameter's ``grad`` to Σ_n of the (already scaled) per-patient gradient."""
    if isinstance(layer, nn.Linear):
        flat_g = g.reshape(-1, g.shape[2])
        if layer.weight.requires_grad:  # never a gradient on a frozen weight: the noise covers only the trained ones
            layer.weight.grad = flat_g.T @ a.reshape(-1, a.shape[2])
        if layer.bias is not None and layer.bias.requires_grad:
            layer.bias.grad = flat_g.sum(0)
    elif isinstance(layer, nn.LayerNorm):
        if layer.weight is not None and layer.weight.requires_grad:
            layer.weight.grad = (_normalised(layer, a) * g).sum((0, 1))
        if layer.bias is not None and layer.bias.requires_grad:
            layer.bias.grad = g.sum((0, 1))
    else:
        layer.weight.grad = torch.zeros_like(layer.weight).index_add_(0, a.reshape(-1), g.reshape(-1, g.shape[2]))


def _normalised(layer: nn.LayerNorm, a: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.layer_norm(a, layer.normalized_shape, None, None, layer.eps)
