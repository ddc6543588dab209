"""The on-policy engine's pieces and the policy layer: hand-worked cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlx import distributions, losses, optim
from rlx.algos import onpolicy


def test_global_norm_clip_hand_worked():
    tx = optim.scale_by_global_norm_clip(1.0)
    g = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}  # ||g|| = 5
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(out["a"], 3.0 / (5.0 + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(out["b"], 4.0 / (5.0 + 1e-6), rtol=1e-6)
    tx = optim.scale_by_global_norm_clip(jnp.inf)  # inf: no clipping
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(out["a"], 3.0)


def test_clipped_adam_first_step_is_minus_lr_sign():
    # Adam's first step is g / (|g| + eps) elementwise: -lr * sign(g) up to eps.
    params = jnp.array([1.0, -2.0])
    tx = optim.clipped_adam(0.1, jnp.inf, eps=1e-12)
    new, _, info = optim.optimizer_step(tx, params, tx.init(params), jnp.array([0.5, -3.0]))
    np.testing.assert_allclose(new, [0.9, -1.9], rtol=1e-6)
    np.testing.assert_allclose(info["grad_norm"], np.hypot(0.5, 3.0), rtol=1e-6)
    np.testing.assert_allclose(info["update_norm"], 0.1 * np.sqrt(2), rtol=1e-5)


def test_optimizer_step_averages_over_data_parallel_axis():
    params = jnp.zeros(2)
    tx = optax.sgd(1.0)
    grads = jnp.array([[1.0, 0.0], [3.0, 2.0]])  # two shards of one agent
    step = lambda g: optim.optimizer_step(tx, params, tx.init(params), g, "dp")[0]  # noqa: E731
    out = jax.vmap(step, axis_name="dp")(grads)
    np.testing.assert_allclose(out, [[-2.0, -1.0], [-2.0, -1.0]])


@pytest.mark.parametrize("minibatches", [0, 2])
def test_sgd_epochs_and_minibatches(minibatches):
    # loss = 0.5 mean (w - x)^2 with plain SGD lr 1: each step moves w to the minibatch mean.
    x = jnp.arange(4.0)
    loss = lambda w, mb, k: (0.5 * jnp.mean((w - mb) ** 2), {"mb_mean": mb.mean()})  # noqa: E731
    tx = optax.sgd(1.0)
    w, _, aux = onpolicy.sgd(loss, tx, jnp.float32(10.0), tx.init(jnp.float32(10.0)), x,
                             jax.random.PRNGKey(0), epochs=3, minibatches=minibatches)
    shape = (3,) if minibatches == 0 else (3, 2)
    assert aux["loss"].shape == shape and aux["grad_norm"].shape == shape
    np.testing.assert_allclose(w, aux["mb_mean"].reshape(-1)[-1])
    if minibatches == 0:
        np.testing.assert_allclose(aux["mb_mean"], 1.5)
    else:  # every epoch's two minibatches partition the batch
        np.testing.assert_allclose(aux["mb_mean"].sum(-1), 3.0)


def test_sgd_refuses_uneven_minibatches():
    with pytest.raises(ValueError, match="5 does not split into 2"):
        onpolicy.sgd(lambda w, mb, k: (jnp.mean(mb) * w, {}), optax.sgd(1.0), jnp.float32(0.0),
                     (), jnp.arange(5.0), jax.random.PRNGKey(0), epochs=1, minibatches=2)


@pytest.mark.parametrize("head", distributions.HEADS)
def test_per_dimension_log_probs_sum_to_the_joint(head):
    key = jax.random.PRNGKey(0)
    params = jax.random.normal(key, (5, distributions.num_params(head, 3)))
    dist = distributions.make(head, params)
    raw = dist.sample(jax.random.PRNGKey(1))
    per_dim = dist.log_prob_per_dim(raw)
    assert per_dim.shape == ((5, 1) if head == "categorical" else (5, 3))
    np.testing.assert_allclose(per_dim.sum(-1), dist.log_prob(raw), rtol=1e-5, atol=1e-5)


def test_gaussian_per_dimension_log_prob_hand_worked():
    # loc 0, std 1: log N(a) = -a^2/2 - log(2 pi)/2
    dist = distributions.make("gaussian", jnp.zeros((1, 4)))
    lp = dist.log_prob_per_dim(jnp.array([[1.0, 2.0]]))
    np.testing.assert_allclose(lp, [[-0.5 - 0.5 * np.log(2 * np.pi), -2.0 - 0.5 * np.log(2 * np.pi)]],
                               rtol=1e-6)


def test_masked_losses():
    lp = jnp.log(jnp.array([[1.1, 0.5, 9.0]]))
    old = jnp.zeros((1, 3))
    adv = jnp.array([[1.0, -1.0, 100.0]])
    mask = jnp.array([[1.0, 1.0, 0.0]])  # the third position is padding
    # ratios 1.1, 0.5 clipped at 0.2: min(1.1, 1.1) = 1.1; min(-0.5, -0.8) = -0.8 -> -(0.3)/2
    np.testing.assert_allclose(losses.ppo_surrogate(lp, old, adv, 0.2, mask), -0.15, rtol=1e-5)
    # a mask of ones is the unmasked loss
    ones = jnp.ones((1, 3))
    np.testing.assert_allclose(losses.ppo_surrogate(lp, old, adv, 0.2, ones),
                               losses.ppo_surrogate(lp, old, adv, 0.2), rtol=1e-6)
    np.testing.assert_allclose(losses.value_loss(jnp.array([1.0, 3.0]), jnp.zeros(2),
                                                 mask=jnp.array([1.0, 0.0])), 0.5)
    np.testing.assert_allclose(losses.entropy_loss(jnp.array([2.0, 7.0]), jnp.array([0.0, 1.0])), -7.0)
    np.testing.assert_allclose(losses.kl_penalty(jnp.array([1.0, 5.0]), 2.0, jnp.array([1, 0])), 2.0)
    np.testing.assert_allclose(losses.masked_mean(jnp.ones(3), jnp.zeros(3)), 0.0)  # all padding
    np.testing.assert_allclose(
        losses.clip_fraction(lp, old, 0.2, mask), 0.5)  # 1.1 inside, 0.5 outside, 9 masked


def test_ppo_data_parallel_is_a_config_option():
    """`data_parallel=2`: one agent split over two shards (devices) whose params stay equal."""
    from rlx import runner
    from rlx.algos import ppo

    base = ppo.PPOConfig(env="CartPole-v1", num_envs=4, unroll_length=8, num_minibatches=2,
                         update_epochs=1, total_steps=64, num_evals=2, eval_envs=2)
    with pytest.raises(ValueError, match="num_envs = 4 does not split over data_parallel = 3"):
        ppo.make_train(ppo.PPOConfig(**{**base.__dict__, "data_parallel": 3}))
    trainer = ppo.make_train(ppo.PPOConfig(**{**base.__dict__, "data_parallel": 2}))
    assert trainer.shards == 2 and trainer.axis_name == "dp"
    res = runner.run(trainer, jax.random.PRNGKey(0)[None], None, devices=2, progress=False)
    assert res.devices == 2
    for leaf in jax.tree.leaves(res.state.params):
        np.testing.assert_array_equal(leaf[0], leaf[1])
    with pytest.raises(ValueError, match="trains one seed at a time, got 2 seeds"):
        runner.run(trainer, jax.random.split(jax.random.PRNGKey(0), 2), None, progress=False)
