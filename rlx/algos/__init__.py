"""Trainers, each `make_train(config) -> Trainer` (call it as `train(key)`)."""
