"""A federated round against a Communicator: the server's and the worker's part, the one reply
schema both sides use, aggregation, quorum, and the round record that is a line of metrics.jsonl.

Both backends run exactly these functions: gloo ranks in `train.py`, vantage6's central and
partial functions in `algorithm.py`.
"""
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from backends import Communicator, Tensors
from ppsdg import local, secure_aggregation
from ppsdg.checkpoint import Checkpoint
from ppsdg.config import Run
from ppsdg.job import Job
from ppsdg.errors import FederationError
from ppsdg.privacy import HistoryEntry, Ledger, LocalDP, release_entry
from ppsdg.runtime import derive_seed, every_core
from ppsdg.secure_aggregation import NodeSecrets
from ppsdg.models import new_model, state_copy

ROUND = "round"
START = "start_after_round"
NUM_SAMPLES = "num_samples"
TRAIN_LOSS = "train_loss"
FIGURE = "extra."
VOLATILE = ("seconds",)
MAX_SAMPLES = 1 << 31


class WorkerRecord(TypedDict, total=False):
    """A worker that answered: `train_loss` and `critic_loss` are None under DP (withheld)."""

    rank: int
    num_samples: int
    train_loss: float | None
    averaged: bool
    critic_loss: float | None
    generator_loss: float
    epsilon: float
    noise_share: float
    organization: int


class FailedRecord(TypedDict, total=False):
    rank: int
    reason: str
    organization: int


class LateRecord(TypedDict, total=False):
    """A worker whose reply to an earlier round came after that round closed: not averaged, charged."""

    rank: int
    replies: int
    charge: str
    organization: int


class RoundRecord(TypedDict, total=False):
    """One line of metrics.jsonl. `test_loss` and `test_accuracy` are None for a GAN; `epsilon`,
    `delta` and `accountant` are there only under local DP."""

    round: int
    test_loss: float | None
    test_accuracy: float | None
    lr: float | None
    group: list[int]
    participants: list[int]
    workers: list[WorkerRecord]
    failed: list[FailedRecord]
    late: list[LateRecord]
    attempts: int
    epsilon: float
    delta: float
    accountant: str
    seconds: float


def comparable(record: Mapping) -> dict:
    """A record as every backend and every rerun of the same training writes it: without timings,
    and without the organization ids that only vantage6 knows."""
    def plain(entries: list[Mapping]) -> list[dict]:
        return [{k: v for k, v in entry.items() if k != "organization"} for entry in entries]

    return {**{k: v for k, v in record.items() if k not in VOLATILE},
            "workers": plain(record["workers"]), "failed": plain(record["failed"])}


@dataclass
class Reply:
    """What a worker sends back: its parameters or gradients, the count and loss that weight them,
    and named figures (a DP accountant entry, GAN losses). One schema for both sides of a round."""

    update: Tensors
    num_samples: int
    train_loss: float
    figures: dict[str, float]

    def to_message(self) -> Tensors:
        scalars = {NUM_SAMPLES: self.num_samples, TRAIN_LOSS: self.train_loss,
                   **{FIGURE + name: value for name, value in self.figures.items()}}
        return {**self.update,
                **{name: torch.tensor(float(value), dtype=torch.float64) for name, value in scalars.items()}}

    @classmethod
    def from_message(cls, message: Mapping[str, torch.Tensor]) -> "Reply":
        """Read and check a reply: a bad one is rejected (FederationError), on every backend alike."""
        scalars = {name: float(t) for name, t in message.items()
                   if name in (NUM_SAMPLES, TRAIN_LOSS) or name.startswith(FIGURE)}
        bad = sorted(name for name, value in scalars.items() if not math.isfinite(value))
        bad += sorted(name for name, t in message.items()
                      if name not in scalars and t.is_floating_point() and not bool(torch.isfinite(t).all()))
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise FederationError(f"update rejected: {', '.join(bad[:3])}{more} not finite")
        count = scalars[NUM_SAMPLES]
        if count < 1 or count != int(count) or count > MAX_SAMPLES:
            raise FederationError(f"update rejected: num_samples {count:g} is not a whole number in 1..{MAX_SAMPLES}")
        update = {name: t for name, t in message.items() if name not in scalars}
        return cls(update, int(count), scalars[TRAIN_LOSS], reply_figures(message))


def reply_template(model: nn.Module, job: Job) -> Tensors:
    """The shape of every reply this run expects: gradients for FedSGD (parameters only), the whole
    state for FedAvg, and the figures the job reports."""
    update = ({name: p.detach() for name, p in model.named_parameters()} if job.federated_sgd
              else dict(model.state_dict()))
    if not job.secure_aggregation:
        return Reply(update, 0, 0.0, dict.fromkeys(job.figures, 0.0)).to_message()
    figures = dict.fromkeys(job.figures + secure_aggregation.FIGURES, 0.0)
    return Reply(secure_aggregation.reply_template(update, job.synthesizer.secret), 0, 0.0, figures).to_message()


def round_message(model: nn.Module, job: Job, round_: int, attempt: int, keys: Mapping[int, bytes],
                  members: Sequence[int], workers: int) -> Tensors:
    """What the server sends a round's members: the round and the global state; under secure aggregation
    also the attempt and the members' public keys."""
    if job.secure_aggregation:
        return secure_aggregation.round_message(model.state_dict(), round_, attempt, keys, members, workers)
    return {ROUND: torch.tensor(round_, dtype=torch.int64), **model.state_dict()}


def choose_group(seed: int, round_: int, num_workers: int, group_size: int | None) -> list[int]:
    """The workers averaged this round: a seeded random draw, so every rank can compute it alone."""
    if group_size is None or group_size >= num_workers:
        return list(range(1, num_workers + 1))
    rng = np.random.default_rng(derive_seed(seed, round_, 0))
    return sorted(int(r) + 1 for r in rng.choice(num_workers, size=group_size, replace=False))


def participants(group: Sequence[int], num_workers: int, train_all: bool) -> list[int]:
    """The workers that train this round: the group, or everyone with --train-all."""
    return list(range(1, num_workers + 1)) if train_all else list(group)


def weighted_average(messages: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float],
                     names: Sequence[str]) -> Tensors:
    """FedAvg: the mean of each named tensor weighted by `weights` (sample counts), summed in float64."""
    total = float(sum(weights))
    if not messages or total <= 0:
        raise ValueError("nothing to average: no worker with samples")
    averaged: Tensors = {}
    for name in names:
        acc = torch.zeros_like(messages[0][name], dtype=torch.float64)
        for message, weight in zip(messages, weights):
            acc += message[name].to(torch.float64) * (weight / total)
        averaged[name] = acc.to(messages[0][name].dtype)
    return averaged


def aggregate(model: nn.Module, optimizer: torch.optim.Optimizer | None, replies: Sequence[Reply],
              lr: float, summed: bool = False) -> None:
    """Fold the group's replies into the global model: FedAvg, FedSGD's averaged gradient step, or
    (`summed`) statistics that workers release once per round, added to those of earlier rounds."""
    updates, weights = [reply.update for reply in replies], [float(reply.num_samples) for reply in replies]
    if summed:
        state = model.state_dict()
        model.load_state_dict({name: state[name] + sum(update[name] for update in updates) for name in state})
        return
    if optimizer is None:
        model.load_state_dict(weighted_average(updates, weights, list(model.state_dict())))
        return
    params = dict(model.named_parameters())
    gradient = weighted_average(updates, weights, list(params))
    for name, p in params.items():
        p.grad = gradient[name].to(p.device)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()


def check_quorum(comm: Communicator, round_: int, group: Sequence[int], failures: Mapping[int, str],
                 min_workers: int | None) -> None:
    """Go on without the workers that failed only if enough of the averaged group answered."""
    needed = len(group) if min_workers is None else min(min_workers, len(group))
    present = [rank for rank in group if rank not in failures]
    if len(present) >= needed:
        return
    missing = "; ".join(f"{comm.describe(rank)}: {failures[rank]}" for rank in group if rank in failures)
    raise FederationError(f"round {round_}: {len(present)} of {len(group)} workers answered and "
                          f"{needed} are needed (--min-workers) - {missing}")


def exchange(comm: Communicator, model: nn.Module, job: Job, round_: int, members: Sequence[int],
             message: Tensors | None = None) -> tuple[dict[int, Reply], dict[int, str], dict[int, Tensors]]:
    """Send the round's message (by default the round and the global state) to its members: their checked
    replies, why others are missing, and the messages of those rejected (each left its node all the same)."""
    if message is None:
        message = round_message(model, job, round_, 0, {}, members, comm.world_size - 1)
    try:
        messages = comm.exchange(message, members, reply_template(model, job))
    except FederationError as error:
        raise FederationError(f"round {round_}: {error}") from error
    failures = {rank: comm.failures.get(rank, "no answer") for rank in members if rank not in messages}
    replies, rejected = {}, {}
    for rank, reply_message in messages.items():
        try:
            replies[rank] = Reply.from_message(reply_message)
            check_reply(job, replies[rank], model.state_dict(), len(members))
        except FederationError as error:
            replies.pop(rank, None)
            failures[rank] = str(error)
            rejected[rank] = reply_message
    return replies, failures, rejected


def check_reply(job: Job, reply: Reply, sent: Tensors, members: int) -> None:
    """A reply's DP spending, and a statistics release's bounds; under secure aggregation the release is
    masked, so only its declared noise share is checked here, and the sum's bounds once it is summed."""
    dp, synthesizer = job.dp, job.synthesizer if job.releases_statistics else None
    entry = checked_entry(dp, reply.figures) if dp is not None else None
    if synthesizer is None:
        return
    if job.secure_aggregation:
        secure_aggregation.check_figures(reply.figures, members, dp.colluders)
    else:
        synthesizer.check_release(reply.update, reply.num_samples, synthesizer.release_std(dp), sent)
    check_planned_release(dp, entry)


def secure_exchange(comm: Communicator, model: nn.Module, job: Job, run: Run, round_: int, group: Sequence[int],
                    members: Sequence[int], keys: dict[int, bytes], ledger: Ledger | None
                    ) -> tuple[dict[int, Reply], dict[int, str], int]:
    """A secure aggregation round: attempts until every member of one answers, each without the members
    the one before lost (their masks stay in the others' releases, which cannot be summed: those are
    charged and discarded). A member lost is dropped from `keys`, the run's: it takes part in no later
    round, which would otherwise lose an attempt, and charge everyone's release, to it again. Returns
    the last attempt's replies, why members are missing, and the number of attempts."""
    failures = {rank: "no key: it took no part in the run's key agreement, or was lost in an earlier secure round"
                for rank in members if rank not in keys}
    present = [rank for rank in members if rank in keys]
    attempt = 1
    while True:
        try:
            check_quorum(comm, round_, group, failures, run.min_workers)
            if len(present) < 2:
                raise FederationError(f"round {round_}: secure aggregation sums two members or more, and "
                                      f"{len(present)} remain")
        except FederationError as error:
            if ledger is None or attempt == 1:
                raise
            raise FederationError(f"{error}{spent(ledger)}") from error
        message = round_message(model, job, round_, attempt, keys, present, comm.world_size - 1)
        replies, lost, rejected = exchange(comm, model, job, round_, present, message)
        if not lost:
            return replies, failures, attempt
        discarded = {**rejected, **{rank: reply.to_message() for rank, reply in replies.items()}}
        notes, _ = account(job.dp, ledger, {}, discarded, {})
        for rank, reason in lost.items():
            failures[rank] = f"{reason} (attempt {attempt}; the round ran again without it)"
            if rank in notes:
                failures[rank] += f" ({notes[rank]})"
            del keys[rank]
        present = [rank for rank in present if rank not in lost]
        attempt += 1


def spent(ledger: Ledger) -> str:
    """What a round that stops the run adds to its error: the epsilon its releases, charged first, reached."""
    return f"; with the releases of this round, epsilon is {ledger.worst():.4g}"


def secure_total(job: Job, replies: Mapping[int, Reply], sent: Tensors) -> Reply:
    """The members' masked releases summed, checked against what an honest sum obeys: the bounds of one
    release of all their rows under the noise their shares add up to."""
    synthesizer = job.synthesizer
    scales = {reply.figures[secure_aggregation.SCALE_FIGURE] for reply in replies.values()}
    if len(scales) != 1:
        raise FederationError(f"the members' releases declare different scales {sorted(scales)}")
    total = synthesizer.completed(secure_aggregation.summed([reply.update for reply in replies.values()],
                                                            synthesizer.secret, scales.pop()))
    rows = sum(reply.num_samples for reply in replies.values())
    shares = sum(reply.figures[secure_aggregation.SHARE] for reply in replies.values())
    try:
        synthesizer.check_release(total, rows, synthesizer.release_std(job.dp) * math.sqrt(shares), sent)
    except FederationError as error:
        raise FederationError(f"the sum of the members' releases is {error}: one of them is not an honest "
                              "release, and secure aggregation cannot tell which") from error
    return Reply(total, rows, 0.0, {})


def checked_entry(dp: LocalDP, figures: Mapping[str, float]) -> HistoryEntry:
    """A reply's accountant entry; a bad one rejects the update."""
    try:
        return dp.entry(dict(figures))
    except FederationError as error:
        raise FederationError(f"update rejected: {error}") from error


def check_planned_release(dp: LocalDP | None, entry: HistoryEntry | None) -> None:
    """A statistics release spends one release of the run's planned noise, which the server knows (the
    release's declared noise variance is checked against it): a reply whose accountant entry says other
    would have the server charge what the node did not spend, less where it claims more noise or a smaller
    sample rate."""
    if dp is None or entry is None:
        return
    planned = release_entry(dp.release_noise())
    if not (math.isclose(entry[0], planned[0], rel_tol=1e-9) and tuple(entry[1:]) == planned[1:]):
        raise FederationError(f"update rejected: its DP spending {entry} (noise multiplier, sample rate, steps) is "
                              f"not the planned release's {planned}")


def reply_figures(message: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """A reply's named figures (the DP accountant entry, the GAN's losses); also of a reply rejected
    for its update, whose release must still be charged."""
    return {name[len(FIGURE):]: float(t) for name, t in message.items() if name.startswith(FIGURE) and t.numel() == 1}


def charge(dp: LocalDP, ledger: Ledger, rank: int, figures: Mapping[str, float]) -> str:
    """Charge a release that the round does not average (rejected, or late): it left its node all the
    same. Unreadable figures are charged as the worker's previous round; a worker without one is
    named, and its node's own ledger (ppsdg/policy.py) is what counts it."""
    try:
        entry = dp.entry(dict(figures))
    except FederationError:
        history = ledger.histories.get(rank)
        if not history:
            return "its DP spending is unreadable and it has no earlier round: not charged by the server"
        entry = history[-1]
    ledger.add(rank, entry)
    return f"charged: epsilon {ledger.epsilon_of(rank):.4g}"


def account(dp: LocalDP | None, ledger: Ledger | None, replies: Mapping[int, Reply],
            rejected: Mapping[int, Tensors], late: Mapping[int, Sequence[Tensors]]
            ) -> tuple[dict[int, str], dict[int, str]]:
    """Under DP, charge every release the server received this round: the replies, the rejected
    ones and the late ones of earlier rounds. Returns what was charged for the rejected and the late."""
    if dp is None or ledger is None:
        return {}, {}
    for rank, reply in replies.items():
        ledger.add(rank, dp.entry(reply.figures))
    for_rejected = {rank: charge(dp, ledger, rank, reply_figures(message)) for rank, message in rejected.items()}
    for_late = {rank: "; ".join(charge(dp, ledger, rank, reply_figures(message)) for message in messages)
                for rank, messages in late.items()}
    return for_rejected, for_late


def server_round(comm: Communicator, model: nn.Module, optimizer: torch.optim.Optimizer | None, run: Run,
                 job: Job, round_: int, test_set: local.Examples, ledger: Ledger | None,
                 keys: dict[int, bytes] | None = None) -> RoundRecord:
    """The server's part of a round: draw the group, exchange, account, aggregate, test.

    Every release is charged before the quorum is checked: a round that stops the run has still
    spent what its workers released, and the error says what the run's epsilon has become. Under
    secure aggregation `keys` are the run's public keys (`agree_keys`).
    """
    started = time.perf_counter()
    num_workers = comm.world_size - 1
    dp = job.dp
    group = choose_group(run.seed, round_, num_workers, run.group_size)
    members = participants(group, num_workers, run.train_all)
    attempts = 1
    if job.secure_aggregation:
        replies, failures, attempts = secure_exchange(comm, model, job, run, round_, group, members, keys, ledger)
        rejected = {}
    else:
        replies, failures, rejected = exchange(comm, model, job, round_, members)
    late = comm.late_replies()
    for_rejected, for_late = account(dp, ledger, replies, rejected, late)
    for rank, note in for_rejected.items():
        failures[rank] += f" ({note})"
    check_reach(comm, round_, ledger)
    try:
        check_quorum(comm, round_, group, failures, run.min_workers)
    except FederationError as error:
        if ledger is None:
            raise
        raise FederationError(f"{error}{spent(ledger)}") from error
    averaged = [reply for rank, reply in replies.items() if rank in group]
    if job.secure_aggregation:
        try:
            averaged = [secure_total(job, replies, model.state_dict())]
        except FederationError as error:
            raise FederationError(f"round {round_}: {error}{spent(ledger)}") from error
    aggregate(model, optimizer, averaged, job.lr(round_), summed=job.releases_statistics)
    if job.synthesizer is not None:
        job.synthesizer.after_round(model, round_)
    figures = job.synthesizer.figures if job.synthesizer is not None else ()
    workers = [worker_record(rank, reply, rank in group, dp, ledger, figures) for rank, reply in replies.items()]
    test_loss, accuracy = None, None
    if job.classifier is not None:
        with every_core():
            test_loss, accuracy = local.test(model, test_set, job.classifier.test_batch_size)
        if not math.isfinite(test_loss):
            raise FederationError(f"round {round_}: the global model diverged (test loss {test_loss}): the run stops "
                                  "before saving it; a lower --learning-rate may train")
    record = RoundRecord(round=round_, test_loss=test_loss, test_accuracy=accuracy,
                         lr=job.lr(round_), group=group, participants=members, workers=workers,
                         failed=[FailedRecord(rank=rank, reason=failures[rank]) for rank in members if rank in failures])
    if job.secure_aggregation:
        record["attempts"] = attempts
    if late:
        record["late"] = [LateRecord(rank=rank, replies=len(messages), **({"charge": for_late[rank]} if dp else {}))
                          for rank, messages in sorted(late.items())]
    if dp is not None:
        record.update(dp.round_figures(ledger))
    record["seconds"] = time.perf_counter() - started
    return record


def check_reach(comm: Communicator, round_: int, ledger: Ledger | None) -> None:
    """A worker charged an epsilon out of the accountant's reach (privacy.out_of_reach) has no guarantee
    left to report: the run stops, naming it; the rounds before are kept."""
    lost = [rank for rank in sorted(ledger.histories) if ledger.epsilon_of(rank) == math.inf] if ledger else []
    if lost:
        named = "; ".join(f"{comm.describe(rank)} (last entry {ledger.histories[rank][-1]})" for rank in lost)
        raise FederationError(f"round {round_}: the DP spending of {named} is out of the {ledger.accountant} "
                              "accountant's reach: charged epsilon inf, the run stops (with many steps, "
                              "--accountant rdp reaches further)")


def worker_record(rank: int, reply: Reply, averaged: bool, dp: LocalDP | None, ledger: Ledger | None,
                  figures: Sequence[str]) -> WorkerRecord:
    """A worker's line in the round record; under DP, with its epsilon so far (already charged)."""
    worker = WorkerRecord(rank=rank, num_samples=reply.num_samples, train_loss=reply.train_loss,
                          averaged=averaged, **{k: v for k, v in reply.figures.items()
                                                if k in (*figures, secure_aggregation.SHARE)})
    if dp is not None and ledger is not None:
        worker.update({k: None for k in dp.withheld if k in worker})
        worker["epsilon"] = ledger.epsilon_of(rank)
    return worker


def serve(comm: Communicator, run: Run, job: Job, test_set: local.Examples,
          on_round: Callable[[RoundRecord, Checkpoint], None] = lambda record, point: None,
          resume: Checkpoint | None = None) -> Checkpoint:
    """The server's whole training, from the seeded initial model or from where `resume` stopped.

    After every round `on_round` gets the round's record and the checkpoint to go on from.
    """
    model = new_model(job.synthesizer, run.seed, test_set.labels.device)
    optimizer = server_optimizer(model, job)
    ledger = job.dp.ledger() if job.dp else None
    point = resume or Checkpoint(round=0, model=state_copy(model))
    model.load_state_dict(point.model)
    if optimizer is not None and point.optimizer is not None:
        optimizer.load_state_dict(point.optimizer)
    if ledger is not None:
        ledger.restore(point.histories)
    records, snapshots = list(point.records), dict(point.snapshots)
    keys = agree_keys(comm) if job.secure_aggregation else {}
    with tqdm(range(point.round + 1, run.num_rounds + 1), desc="rounds", position=0,
              disable=None) as rounds:
        for round_ in rounds:
            record = server_round(comm, model, optimizer, run, job, round_, test_set, ledger, keys)
            records.append(record)
            if job.sample_every and round_ % job.sample_every == 0:
                snapshots[round_] = job.synthesizer.generator_state(model)
            point = Checkpoint(round_, state_copy(model), list(records),
                               optimizer.state_dict() if optimizer is not None else None,
                               {rank: list(h) for rank, h in ledger.histories.items()} if ledger else {},
                               dict(snapshots))
            on_round(record, point)
            rounds.set_postfix(progress_figures(record))
    return point


def agree_keys(comm: Communicator) -> dict[int, bytes]:
    """The run's key agreement: every worker's public key, relayed by the server to the members of each
    round. A worker that does not answer takes part in no secure round of the run."""
    workers = list(range(1, comm.world_size))
    try:
        replies = comm.exchange(secure_aggregation.key_request(), workers, secure_aggregation.key_template())
    except FederationError as error:
        raise FederationError(f"the key agreement of secure aggregation: {error}") from error
    keys = {rank: reply[secure_aggregation.PUBLIC_KEY].numpy().tobytes() for rank, reply in replies.items()}
    if len(set(keys.values())) < 2:
        missing = "; ".join(f"{comm.describe(rank)}: {comm.failures.get(rank, 'no answer')}"
                            for rank in workers if rank not in keys)
        raise FederationError(f"the key agreement of secure aggregation needs two workers with distinct keys, "
                              f"and {len(keys)} answered - {missing}")
    return keys


def end_work(comm: Communicator, state: Tensors, job: Job) -> None:
    """Server side (gloo): under secure aggregation a worker takes whatever message comes (a round may
    run again), so the server tells every worker when the run is over, in a message of the rounds' shape."""
    if job.secure_aggregation:
        message = secure_aggregation.round_message(state, secure_aggregation.END, 0, {}, [], comm.world_size - 1)
        comm.broadcast(message, src=0, group=list(range(1, comm.world_size)))


def server_optimizer(model: nn.Module, job: Job) -> torch.optim.Optimizer | None:
    """FedSGD's server optimizer, which steps the global model with the averaged gradient; None for FedAvg."""
    if not job.federated_sgd:
        return None
    return local.make_optimizer(model, job.classifier.learning_rate, job.classifier.momentum)


def progress_figures(record: RoundRecord) -> dict[str, str]:
    figures = {k: f"{record[k]:.4f}" for k in ("test_accuracy", "test_loss", "epsilon")
               if record.get(k) is not None}
    losses = [w["generator_loss"] for w in record["workers"] if w.get("generator_loss") is not None]
    return figures or ({"generator_loss": f"{sum(losses) / len(losses):.4f}"} if losses else {})


def announce_start(comm: Communicator, last_round: int) -> None:
    """Server side (gloo): tell every worker the last finished round, 0 unless the run resumes."""
    comm.broadcast({START: torch.tensor(last_round, dtype=torch.int64)}, src=0)


def receive_start(comm: Communicator) -> int:
    return int(comm.broadcast({START: torch.tensor(0, dtype=torch.int64)}, src=0)[START])


def worker_round(comm: Communicator, model: nn.Module, examples: local.Examples, run: Run, job: Job,
                 secrets: NodeSecrets | None = None, colluders: int | None = None) -> int:
    """The worker's part of a round, the same on every backend: receive, train, reply. Under secure
    aggregation (`secrets`, the node's half of the key agreement) the release is masked, with its share
    of the noise for `colluders` (None: all of it); returns END where the server ends the run."""
    workers = comm.world_size - 1
    message = comm.broadcast(round_message(model, job, 0, 0, {}, [], workers), src=0)
    round_ = int(message.pop(ROUND))
    if round_ == secure_aggregation.END and job.secure_aggregation:
        return round_
    if not 1 <= round_ <= run.num_rounds:
        raise FederationError(f"the server's message is for round {round_}, not one of this run's 1..{run.num_rounds}")
    attempt = int(message.pop(secure_aggregation.ATTEMPT, torch.tensor(0)))
    keys = message.pop(secure_aggregation.KEYS, None)
    model.load_state_dict(message)
    if job.secure_aggregation:
        peers = secrets.peers(keys, comm.rank)
        reply = secure_update(model, examples, job, run.seed, round_, attempt, comm.rank, secrets, peers, colluders)
    else:
        update, num_samples, loss, figures = local.local_update(model, examples, job, run.seed, round_, comm.rank)
        if job.dp is not None:
            loss, figures = job.dp.release(loss, figures)
        reply = Reply(update, num_samples, loss, figures)
    comm.gather(reply.to_message(), dst=0)
    return round_


def secure_update(model: nn.Module, examples: local.Examples, job: Job, seed: int, round_: int, attempt: int,
                  rank: int, secrets: NodeSecrets, peers: Mapping[int, bytes], colluders: int | None) -> Reply:
    """A member's masked release: its exact counts, its share of the noise (discrete Gaussian, secure
    under --secure-noise, else seeded by (seed, round, rank, attempt)), masked under this attempt's
    context, which it spends first."""
    synthesizer, dp = job.synthesizer, job.dp
    synthesizer.check_instructions(model)
    share = secure_aggregation.share_of(len(peers), colluders)
    exact = synthesizer.exact_release(model, examples.images, examples.labels, dp, share)
    noise = dp.integer_noise(secure_aggregation.noise_sigma(exact, share), derive_seed(seed, round_, rank, attempt))
    mask_context = secure_aggregation.context(round_, attempt)
    secrets.use(mask_context)
    update = secure_aggregation.masked_reply(exact, noise, rank, secrets, peers, mask_context)
    figures = {**dp.release_spent(dp.release_noise()), secure_aggregation.SHARE: share,
               secure_aggregation.SCALE_FIGURE: exact.scale}
    return Reply(update, len(examples), 0.0, figures)


def work(comm: Communicator, run: Run, job: Job, examples: local.Examples) -> None:
    """A long-lived worker (gloo): from the round the server starts at, take part in the rounds
    whose group holds this rank; under secure aggregation, after the key agreement, answer each
    message until the server ends the run."""
    model = new_model(job.synthesizer, run.seed, examples.labels.device)
    num_workers = comm.world_size - 1
    start = receive_start(comm)
    if job.secure_aggregation:
        comm.broadcast(secure_aggregation.key_request(), src=0)
        secrets = NodeSecrets.fresh()
        comm.gather(secrets.reply(), dst=0)
        while worker_round(comm, model, examples, run, job, secrets, job.dp.colluders) != secure_aggregation.END:
            pass
        return
    for round_ in range(start + 1, run.num_rounds + 1):
        group = choose_group(run.seed, round_, num_workers, run.group_size)
        if comm.rank in participants(group, num_workers, run.train_all):
            worker_round(comm, model, examples, run, job)
