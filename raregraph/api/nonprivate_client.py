"""The non-private reference federation's ClientApp: ``raregraph federate --epsilon inf`` (and the
benchmarks' "no DP" rows) train the same model, rounds and steps as a DP run, with plain SGD at
every site: no per-patient clipping, no noise, no privacy accountant.

Its ``train`` handler reads the site's patients and the cached bundle as :mod:`client.training`
does, but opens no privacy state and signs no ledger entry: there is no mechanism to record, and
a state opened with a made-up budget would later refuse or mislead the site's real DP runs. The
reply reports ε = ∞. The bundle and suite queries go to the real ClientApp; the disease-mix and
evaluate queries are declined there (the run sets both noise multipliers to 0), so the model's
disease mix is uniform: the coordinator accepts a disease mix only with the ledger entry that
charged it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import bundle_cache
from client.app import make_app, refuse
from client.config import NodeConfig
from client.training import RoundConfig, read_tensors
from shared import protocol as P
from shared.errors import RareGraphError
from shared.model.checkpoint import build
from shared.model.training import shuffled_batches, train_steps


#: the node config's budget in a non-private run: required by NodeConfig, read by no handler this app routes
#: (the run's disease-mix and evaluation noise multipliers are 0, so those queries decline before any state)
UNUSED_BUDGET = 1.0


def nonprivate_client(nodes: list[NodeConfig]) -> ClientApp:
    """A ClientApp whose ``train`` handler does plain SGD (see the module docstring); ``nodes[i]``
    is the site of simulation partition i."""
    resolve: Callable[[Context], NodeConfig] = lambda context: nodes[int(context.node_config["partition-id"])]  # noqa: E731
    honest = make_app(resolve)
    app = ClientApp()
    for action in (P.BUNDLE_ACTION, P.SUITE_ACTION, P.MIX_ACTION):
        app.query(action)(lambda msg, context: honest(msg, context))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        try:
            node = resolve(context)
            cfg = RoundConfig.from_record(msg.content[P.CONFIG])
            torch.set_num_threads(node.threads)
            bundle = bundle_cache.load(node.state_path, cfg.bundle_sha256, node.coordinator_pub)
            tensors = read_tensors(node, bundle, node.data_source)
        except RareGraphError as exc:
            return refuse(msg, f"site refuses to train: {exc}")
        model, schedule, tables, layout = build(bundle, guidance=cfg.guidance)
        model.load_state_dict(msg.content[P.ARRAYS].to_torch_state_dict())
        partition = int(context.node_config["partition-id"])
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + cfg.server_round + partition)
        x0 = layout.to_vectors(tensors)
        disease = torch.from_numpy(np.array(tensors.disease, dtype=np.int64))
        losses = train_steps(model, torch.optim.AdamW(model.parameters(), lr=cfg.lr),
                             shuffled_batches(x0, disease, batch_size=node.batch_size, generator=generator),
                             schedule=schedule, tables=tables, steps=cfg.local_steps, cond_drop=0.1,
                             generator=generator, multiplicity=node.noise_multiplicity)
        metrics = {P.NUM_EXAMPLES: float(tensors.n), P.LOSS: float(np.mean(losses)), P.EPSILON: float("inf"),
                   P.DELTA: 0.0, P.NOISE_MULTIPLIER: 0.0, P.SAMPLE_RATE: 0.0, P.STEPS: float(cfg.local_steps),
                   P.CLIP_NORM: 0.0, P.NOISE_MULTIPLICITY: float(node.noise_multiplicity), P.REFUSED: 0.0,
                   P.BUDGET_EPSILON: float("inf")}
        return Message(RecordDict({P.ARRAYS: ArrayRecord(model.state_dict()), P.METRICS: MetricRecord(metrics),
                                   P.SITE: ConfigRecord({P.SITE_ID: node.site_id, "accountant": "none"})}),
                       reply_to=msg)

    return app
