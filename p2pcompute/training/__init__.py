"""Distributed training (issue 12): models as opset-2 graphs, robust aggregation, the coordinator.

Files:
    model.py        MLP / linear model as opset-2 graphs: one step (forward+backward), H local steps, predict
    data.py         scikit-learn's digits (shipped, no download): seeded split, shards, minibatch indices
    optim.py        SGD with momentum, DiLoCo's outer Nesterov step, flatten/unflatten of parameter dicts
    reference.py    the single-process reference trainer on the same graphs (accuracy, wall time)
    aggregate.py    mean, coordinate median, trimmed mean, CenteredClip (pure numpy; non-finite rows dropped)
    coordinator.py  the training coordinator, pure: rounds, shards, sync / local / async, faults, checkpoints
    inprocess.py    drives the coordinator in one process in virtual time with real numeric work, faults, liars
    INTEGRATION.md  how the next session wires this into jobs, the CLI and the simulation

The operators the graphs need beyond opset 1 are in ops/op_train.py.
"""
