"""Baselines the knowledge-guided diffusion model is measured against, in the same harness and
under the same per-site DP budget (issue 6): independent marginals (:mod:`.marginals`) and a
DP-GAN (:mod:`.dpgan`). The prior-only sampler is :mod:`shared.baselines.prior`; plain diffusion
and the learned-schedule ablation are guidance modes of the diffusion model itself. Every one of
them, and the diffusion model through :class:`shared.model.generation.DiffusionGenerator`,
samples through the one interface of :mod:`.base`.

Fitting one to a consortium (the benchmark and ``raregraph federate --method``) is
:mod:`.consortium`; what each site spends goes to its persistent privacy state and signed
ledger through :mod:`.site_charge`; the fitted baseline's model folder, which ``raregraph
generate`` samples, is :mod:`.model_folder`."""
