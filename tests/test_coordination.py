"""Properties of the federated rounds: averaging, group draws, FedSGD and FedAvg against plain training."""
import os

import pytest
import torch
from torch import nn

from ppsdg import coordination, local, models, parser, runtime
from ppsdg.config import Config
from ppsdg.job import Job


def config(**overrides) -> Config:
    return parser.from_mapping(overrides)


def test_weighted_average_equals_hand_computed_mean():
    a = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor(4.0)}
    b = {"w": torch.tensor([3.0, 6.0, -1.0]), "b": torch.tensor(0.0)}
    averaged = coordination.weighted_average([a, b], [30, 10], ["w", "b"])
    assert torch.allclose(averaged["w"], torch.tensor([1.5, 3.0, 2.0]))
    assert torch.allclose(averaged["b"], torch.tensor(3.0))
    assert averaged["w"].dtype == torch.float32


def test_weighted_average_rejects_empty_weights():
    with pytest.raises(ValueError, match="nothing to average"):
        coordination.weighted_average([{"w": torch.ones(2)}], [0], ["w"])


def test_group_draw_is_seeded_sorted_distinct_and_varies_by_round():
    groups = [coordination.choose_group(7, r, 10, 3) for r in range(1, 21)]
    assert groups == [coordination.choose_group(7, r, 10, 3) for r in range(1, 21)]
    assert all(len(set(g)) == 3 and g == sorted(g) and 1 <= g[0] and g[-1] <= 10 for g in groups)
    assert len({tuple(g) for g in groups}) > 5
    assert coordination.choose_group(7, 1, 4, None) == [1, 2, 3, 4]


def test_train_all_trains_everyone_but_group_is_averaged():
    assert coordination.participants([2], 3, train_all=True) == [1, 2, 3]
    assert coordination.participants([2], 3, train_all=False) == [2]


def test_derive_seed_depends_on_every_part():
    seeds = {runtime.derive_seed(1, r, w) for r in range(5) for w in range(5)}
    assert len(seeds) == 25


def linear_model() -> nn.Module:
    """A dropout-free model, so a full-batch gradient is a deterministic function of the data."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.LogSoftmax(dim=1))


def examples(count: int, seed: int) -> local.Examples:
    g = torch.Generator().manual_seed(seed)
    return local.Examples(torch.randn(count, 1, 28, 28, generator=g), torch.randint(0, 10, (count,), generator=g))


def test_fedsgd_full_batch_equals_centralized_sgd_on_union():
    settings = config(stochastic_gradient=True, batch_size=10_000, learning_rate=0.1, momentum=0.0)
    job = Job.of_config(settings)
    shards = [examples(n, seed) for n, seed in ((40, 1), (25, 2), (70, 3))]
    federated = linear_model()
    replies = []
    for rank, shard in enumerate(shards, start=1):
        worker = linear_model()
        worker.load_state_dict(federated.state_dict())
        grads, count, loss, _ = local.local_update(worker, shard, job, settings.run.seed, round_=1, rank=rank)
        replies.append(coordination.Reply(grads, count, loss, {}))
    optimizer = local.make_optimizer(federated, settings.job.learning_rate, settings.job.momentum)
    coordination.aggregate(federated, optimizer, replies, job.lr(1))

    central = linear_model()
    union = local.Examples(torch.cat([s.images for s in shards]), torch.cat([s.labels for s in shards]))
    central_optimizer = local.make_optimizer(central, settings.job.learning_rate, 0.0)
    local.train_batch(central, central_optimizer, union.images, union.labels)

    for (name, p), q in zip(federated.named_parameters(), central.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert not torch.equal(federated[1].weight, linear_model()[1].weight)


def test_fedavg_of_one_worker_is_its_local_training():
    settings = config(num_nodes=2, epochs=2, batch_size=16)
    job, classifier = Job.of_config(settings), settings.job
    shard = examples(48, 5)
    federated, alone = linear_model(), linear_model()
    for round_ in (1, 2):
        worker = linear_model()
        worker.load_state_dict(federated.state_dict())
        state, count, loss, _ = local.local_update(worker, shard, job, settings.run.seed, round_, rank=1)
        coordination.aggregate(federated, None, [coordination.Reply(state, count, loss, {})], 0.0)
        plain_optimizer = torch.optim.SGD(alone.parameters(), lr=classifier.lr(round_),
                                          momentum=classifier.momentum)
        generator = torch.Generator().manual_seed(runtime.derive_seed(settings.run.seed, round_, 1))
        for _ in range(classifier.epochs):
            local.train_epoch(alone, plain_optimizer, local.shuffled_batches(shard, classifier.batch_size, generator))
    for name, tensor in federated.state_dict().items():
        assert torch.equal(tensor, alone.state_dict()[name]), name


def test_gloo_layout_does_not_depend_on_dict_order():
    from backends.gloo import GlooCommunicator

    comm = GlooCommunicator.__new__(GlooCommunicator)
    comm.device = torch.device("cpu")
    a = {"b": torch.tensor(2.0, dtype=torch.float64), "a": torch.tensor(1.0, dtype=torch.float64),
         "w": torch.ones(3)}
    b = {"w": torch.ones(3), "a": torch.tensor(1.0, dtype=torch.float64),
         "b": torch.tensor(2.0, dtype=torch.float64)}
    assert [(names, flat.tolist()) for names, flat in comm._flatten(a)] == \
        [(names, flat.tolist()) for names, flat in comm._flatten(b)]


def test_server_test_figures_do_not_depend_on_its_thread_count():
    """The server tests on every core (runtime.every_core) while gloo workers train on one thread
    each and the mock tests on --threads: the figures must agree all the same."""
    settings = config(num_nodes=2)
    run, job = settings.run, Job.of_config(settings)
    cpu = torch.device("cpu")
    model = models.new_model(job.synthesizer, run.seed)
    shard = local.worker_examples(settings.source, None, run.workers, run.seed, 1, cpu)
    local.local_update(model, shard, job, run.seed, 1, rank=1)
    test_set = local.test_examples(settings.source, True, cpu)
    torch.set_num_threads(1)
    one_thread = local.test(model, test_set, settings.job.test_batch_size)
    with runtime.every_core():
        threads = torch.get_num_threads()
        every = local.test(model, test_set, settings.job.test_batch_size)
    assert torch.get_num_threads() == 1
    assert threads == len(os.sched_getaffinity(0))
    assert every == one_thread
