"""Distributed training (issue 12): models as opset-2 graphs, robust aggregation, the coordinator.

Files:
    model.py        MLP / linear model as opset-2 graphs: one step (forward+backward), H local steps, predict
    sharding.py     parameter sharding: parts of the parameter vector, the XOR-closest peer aggregates each (distinct
                    owners, DHT keyspace on the network); memory check
    parts.py        the graphs of sharding on the network: an update cut into part outputs, one part's aggregate
    data.py         scikit-learn's digits (shipped, no download) or a seeded synthetic problem: split, shards, batches
    optim.py        SGD with momentum, DiLoCo's outer Nesterov step, flatten/unflatten of parameter dicts
    reference.py    the single-process reference trainer on the same graphs (accuracy, wall time)
    aggregate.py    mean, coordinate median, trimmed mean, CenteredClip (pure numpy; non-finite rows dropped)
    coordinator.py  the training coordinator, pure: rounds, shards, sync / local / async, faults, checkpoints
    inprocess.py    drives the coordinator in one process in virtual time with real numeric work, faults, liars;
                    Updater / feeds / task_graph: the numeric side the network driver shares
    spec.py         train.yaml -> TrainSpec (model, dataset, optimiser, mode, schedule); every problem named
    driver.py       NetworkTrainer, the trio driver: each round's assignments a scheduler job, parameters and
                    checkpoints as CIDs, resume from a checkpoint; parameter parts aggregated by tasks pinned to
                    their owners; spot checks as the jobs' verification
    service.py      TrainingService: the daemon's training runs, control API /v1/train (start, list, get, cancel)
    plot.py         the learning curve PNG (matplotlib)
    simulate.py     ``simulate train``: the coordinator on the simulated churning cluster, real numeric work, liars
    INTEGRATION.md  how this is wired into jobs, the CLI and the simulation, and what is left

The operators the graphs need beyond opset 1 are in ops/op_train.py.
"""
