"""The hospital's ClientApp (``flwr run .`` entry point ``client.app:app``): wiring only.

Handlers, routed by Flower on the message type: ``query.bundle`` (the study bundle: offer →
cached or need; files → verify with the pinned key and cache), ``query.suite`` (a synthetic
sample → the evaluation suite's numbers, :mod:`client.sample_evaluation`), ``query.disease_mix``
(the site's disease histogram plus Gaussian noise, charged once, or declined;
:mod:`client.disease_mix`), ``query.survey`` (noisy counts of the bundle's public candidate codes and
of event times, charged once, or declined; :mod:`client.vocabulary_survey`), ``train`` (one DP
round, :mod:`client.training`) and ``evaluate``
(the global model's loss on the site's patients, released with DP and charged, or declined;
:mod:`client.loss_evaluation`). Replies carry weights, counts, metrics and the site's signed
privacy ledger only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import bundle_cache
from client.config import NodeConfig
from client.disease_mix import release_disease_mix
from client.loss_evaluation import evaluate_round
from client.sample_evaluation import SuiteRequest, evaluate_sample
from client.simulated_site import is_simulated, simulated_node
from client.training import RoundConfig, train_round
from client.vocabulary_survey import SurveyRequest, release_survey
from shared import protocol as P
from shared.errors import RareGraphError

REFUSED_CODE = 4001  # error code of a site that will not train (bad bundle, bad data, bad state)
BUNDLE_REFUSED = ("site refuses the study bundle: it does not verify against the coordinator key pinned in the "
                  "site's node config, or the site cannot cache it; the reason is in the site's own log")
log = logging.getLogger("raregraph.client")

NodeResolver = Callable[[Context], NodeConfig]


def node_from_context(context: Context) -> NodeConfig:
    """Deployment: hospital facts from ``--node-config``; a virtual SuperNode of Flower's
    simulation engine (``flwr run .`` on a local simulation: only a partition id) derives
    them from the run config (:mod:`client.simulated_site`)."""
    node_config = dict(context.node_config)
    if is_simulated(node_config):
        return simulated_node(dict(context.run_config), node_config)
    return NodeConfig.from_mapping(node_config)


def refuse(msg: Message, reason: str) -> Message:
    """The error reply of a site that refuses; also logged, so the hospital reads why in its own
    SuperNode log (the ClientApp's stderr goes there), not only the coordinator."""
    log.error("%s", reason)
    return Message(Error(code=REFUSED_CODE, reason=reason), reply_to=msg)


def make_app(resolve: NodeResolver = node_from_context) -> ClientApp:
    """A ClientApp; ``resolve`` maps the context to the site's node config."""
    app = ClientApp()

    @app.query(P.BUNDLE_ACTION)
    def bundle(msg: Message, context: Context) -> Message:
        try:
            node = resolve(context)
            offer = msg.content[P.BUNDLE_OFFER]
            sha = str(offer[P.BUNDLE_SHA256])
            if P.BUNDLE_FILES in msg.content:
                files = {k: bytes(v) for k, v in msg.content[P.BUNDLE_FILES].items()}
                bundle_cache.store(node.state_path, sha, files, node.coordinator_pub)
                status = P.VERIFIED
            else:
                status = P.CACHED if bundle_cache.is_cached(node.state_path, sha) else P.NEED
        except (RareGraphError, OSError) as exc:
            # The detail names paths on this site's disk: it goes to the site's log only. The
            # coordinator gets one fixed reason, so a crafted manifest cannot probe the disk.
            log.error("site refuses the study bundle: %s", exc)
            return refuse(msg, BUNDLE_REFUSED)
        return Message(RecordDict({P.BUNDLE_STATUS: ConfigRecord({"status": status})}), reply_to=msg)

    @app.query(P.SUITE_ACTION)
    def suite(msg: Message, context: Context) -> Message:
        try:
            node = resolve(context)
            if not node.eval_suite:
                log.info("site %s declines to evaluate the synthetic sample: eval-suite is false", node.site_id)
                numbers, declined = "", "eval-suite is false in the site's node config"
            else:
                cfg = msg.content[P.CONFIG]
                request = SuiteRequest(run_id=str(cfg[P.RUN_ID]), bundle_sha256=str(cfg[P.BUNDLE_SHA256]),
                                       seed=int(cfg[P.SEED]),
                                       sample={k: v.numpy() for k, v in msg.content[P.SYNTHETIC].items()})
                numbers, declined = json.dumps(evaluate_sample(node, request), allow_nan=False), ""
        except (RareGraphError, ValueError) as exc:
            return refuse(msg, f"site refuses to evaluate the synthetic sample: {exc}")
        return Message(RecordDict({
            P.SUITE: ConfigRecord({P.SUITE_METRICS: numbers, P.SUITE_DECLINED: declined}),
            P.SITE: ConfigRecord({P.SITE_ID: node.site_id}),
        }), reply_to=msg)

    @app.query(P.MIX_ACTION)
    def disease_mix(msg: Message, context: Context) -> Message:
        try:
            node = resolve(context)
            cfg = RoundConfig.from_record(msg.content[P.CONFIG])
            release = release_disease_mix(node, cfg)
        except RareGraphError as exc:
            return refuse(msg, f"site refuses to release its disease mix: {exc}")
        content = RecordDict({
            P.MIX: ConfigRecord({P.MIX_COUNTS: release.counts, P.MIX_RUN: release.charged_in}),
            P.METRICS: MetricRecord(release.metrics),
            P.SITE: ConfigRecord({P.SITE_ID: node.site_id, "accountant": cfg.accountant}),
        })
        if release.ledger is not None:
            content[P.LEDGER] = ConfigRecord({P.LEDGER_ENTRIES: release.ledger})
        return Message(content, reply_to=msg)

    @app.query(P.SURVEY_ACTION)
    def survey(msg: Message, context: Context) -> Message:
        try:
            node = resolve(context)
            cfg = RoundConfig.from_record(msg.content[P.CONFIG])
            release = release_survey(node, cfg, SurveyRequest.from_record(msg.content[P.SURVEY]))
        except RareGraphError as exc:
            return refuse(msg, f"site refuses the vocabulary survey: {exc}")
        content = RecordDict({
            P.SURVEY: ConfigRecord({P.SURVEY_CODES: release.codes, P.SURVEY_TIME: release.time,
                                    P.SURVEY_RUN: release.charged_in}),
            P.METRICS: MetricRecord(release.metrics),
            P.SITE: ConfigRecord({P.SITE_ID: node.site_id, "accountant": cfg.accountant}),
        })
        if release.ledger is not None:
            content[P.LEDGER] = ConfigRecord({P.LEDGER_ENTRIES: release.ledger})
        return Message(content, reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        try:
            node = resolve(context)
            cfg = RoundConfig.from_record(msg.content[P.CONFIG])
            global_weights = msg.content[P.ARRAYS].to_torch_state_dict()
            outcome = train_round(node, cfg, global_weights)
        except RareGraphError as exc:
            return refuse(msg, f"site refuses to train: {exc}")
        weights = outcome.weights if outcome.weights is not None else global_weights
        return Message(RecordDict({
            P.ARRAYS: ArrayRecord(weights),
            P.METRICS: MetricRecord(outcome.metrics),
            P.SITE: ConfigRecord({P.SITE_ID: node.site_id, "accountant": cfg.accountant}),
            P.LEDGER: ConfigRecord({P.LEDGER_ENTRIES: outcome.ledger}),
        }), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        try:
            node = resolve(context)
            cfg = RoundConfig.from_record(msg.content[P.CONFIG])
            metrics, ledger = evaluate_round(node, cfg, msg.content[P.ARRAYS].to_torch_state_dict())
        except RareGraphError as exc:
            return refuse(msg, f"site refuses to evaluate: {exc}")
        content = RecordDict({
            P.METRICS: MetricRecord(metrics),
            P.SITE: ConfigRecord({P.SITE_ID: node.site_id, "accountant": cfg.accountant}),
        })
        if ledger is not None:
            content[P.LEDGER] = ConfigRecord({P.LEDGER_ENTRIES: ledger})
        return Message(content, reply_to=msg)

    return app


app = make_app()
