"""EPG's inner loop: a Gaussian MLP policy trained by Adam on the learned loss.

One inner lifetime on one task (all inside `lax.scan`, so it vmaps over tasks
and loss-parameter perturbations):

    fill the buffer: num_envs x buffer_size steps with the initial policy
    repeat inner_updates times:
        roll out rollout_length steps per env, push them into the buffer (oldest out)
        sgd_steps Adam steps on  L_phi(buffer; pi_theta) + alpha * L_PPO(buffer; pi_theta)
                            (ppo_mix "convex", as openai/EPG: (1 - alpha) L_phi + alpha L_PPO)
    fitness = mean return of eval_envs episodes of the final deterministic policy

L_phi is `rlx.epg.loss_net` (its gradient reaches theta through the policy's
outputs and log-probabilities of the buffer's actions); L_PPO is the clipped
surrogate `rlx.losses.ppo_surrogate` with returns-to-go (`rlx.losses.gae` with
zero values, lambda 1) as normalised advantages -- the paper's annealed
auxiliary term.

The agent is a configuration of rlx's one on-policy engine (`rlx.algos.onpolicy`):
its batch is the buffer after each rollout is pushed in, and every epoch is one
optimiser step on the whole buffer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlx import distributions, losses
from rlx.algos.onpolicy import Engine, EngineState
from rlx.envs import normalize as obs_norm
from rlx.envs.base import Env
from rlx.epg.config import EPGConfig
from rlx.epg.loss_net import EPGLossNet, reduce_loss
from rlx.networks import GaussianPolicy
from rlx.rollout import Transition, episode_stats


@struct.dataclass
class Buffer:
    """The last `buffer_size` steps of every env, [N, B, ...] (oldest first)."""

    obs: jax.Array  # as the policy saw it (normalised if enabled)
    action: jax.Array  # raw Gaussian sample
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    log_prob: jax.Array  # behaviour policy's log-probability (for the PPO term)


@struct.dataclass
class InnerExtra:
    """The inner agent's own part of `rlx.algos.onpolicy.EngineState.extra`."""

    buffer: Buffer
    return_sum: jax.Array  # completed training episodes so far (for curves)
    return_count: jax.Array


InnerState = EngineState  # extra: InnerExtra


class Inner:
    """The inner loop of `config` on environments of its task family (pure functions)."""

    def __init__(self, config: EPGConfig):
        config.validate()
        self.config = c = config
        self.family = c.task_family()
        env = self.family.template_env()
        self.obs_size = env.obs_shape[0]
        self.action_size = env.action_spec.size
        self.policy = GaussianPolicy(self.action_size, tuple(c.policy_layers), c.activation,
                                     c.init_log_std, c.memory_size)
        self.loss_net = EPGLossNet(tuple(tuple(l) for l in c.conv), tuple(c.dense))
        self.optimizer = optax.chain(optax.clip_by_global_norm(c.inner_max_grad_norm),
                                     optax.adam(c.inner_lr))
        self.engine = Engine(
            init_params=self.init_policy_params, act=self._act, mode=self._mode,
            batch_fn=self._push, loss_fn=self._loss, optimizer=lambda hp, u: self.optimizer,
            num_envs=c.num_envs, unroll_length=c.rollout_length, epochs=c.sgd_steps,
            minibatches=0, normalize_observations=c.normalize_observations,
            init_extra=lambda hp: None)

    # ---- shapes and initial parameters ------------------------------------------------------
    @property
    def feature_size(self) -> int:
        a = self.action_size
        return (self.obs_size + a + 1 + 1 + 2 * a + 1 + 1 + self.config.memory_size
                + int(self.config.rtg_feature))

    def init_loss_params(self, key: jax.Array) -> Any:
        return self.loss_net.init(key, jnp.zeros((self.config.buffer_size, self.feature_size)))

    def init_policy_params(self, key: jax.Array) -> Any:
        return self.policy.init(key, jnp.zeros((1, self.obs_size)))

    # ---- the losses ---------------------------------------------------------------------------
    def features(self, policy_params: Any, buf: Buffer) -> tuple[jax.Array, jax.Array]:
        """Step features [N, B, F] and log pi(a_t|o_t) [N, B] under `policy_params`."""
        c = self.config
        dist_params, memory = self.policy.apply(policy_params, buf.obs)
        log_prob = distributions.make("gaussian", dist_params).log_prob(buf.action)
        n, b = log_prob.shape
        rel_time = jnp.broadcast_to(jnp.arange(b, dtype=jnp.float32) / b, (n, b))
        mem = jnp.broadcast_to(memory, (n, b, c.memory_size))
        parts = [buf.obs, buf.action, (buf.reward * c.reward_scale)[..., None],
                 buf.terminated.astype(jnp.float32)[..., None], dist_params,
                 log_prob[..., None], rel_time[..., None], mem]
        if c.rtg_feature:
            parts.append(self.normalized_returns(buf)[..., None])
        return jnp.concatenate(parts, -1), log_prob

    def normalized_returns(self, buf: Buffer) -> jax.Array:
        """Discounted returns-to-go inside the buffer [N, B] (`rlx.losses.gae` with zero values,
        lambda 1: episodes cut at `done`, no bootstrap past the buffer's end), normalised
        to zero mean and unit std over the buffer."""
        c = self.config
        zeros = jnp.zeros_like(buf.reward.T)
        returns, _ = losses.gae(buf.reward.T * c.reward_scale, zeros, zeros, buf.terminated.T,
                                buf.done.T, c.gamma, 1.0)
        return jax.lax.stop_gradient(losses.normalize(returns.T))

    def learned_loss(self, loss_params: Any, policy_params: Any, buf: Buffer) -> jax.Array:
        """L_phi: the loss network's scalar, averaged over the envs' buffers."""
        x, log_prob = self.features(policy_params, buf)
        return reduce_loss(self.loss_net, loss_params, x, log_prob, self.config.loss_form)

    def ppo_loss(self, policy_params: Any, buf: Buffer) -> jax.Array:
        """Clipped surrogate with normalised returns-to-go (no critic), the auxiliary term."""
        c = self.config
        dist_params, _ = self.policy.apply(policy_params, buf.obs)
        log_prob = distributions.make("gaussian", dist_params).log_prob(buf.action)
        return losses.ppo_surrogate(log_prob, buf.log_prob, self.normalized_returns(buf),
                                    c.ppo_clip)

    def total_loss(self, policy_params, loss_params, buf: Buffer, alpha) -> jax.Array:
        """L_phi + alpha L_PPO (ppo_mix "add") or (1 - alpha) L_phi + alpha L_PPO ("convex")."""
        total = self.learned_loss(loss_params, policy_params, buf)
        if self.config.ppo_coef > 0:
            if self.config.ppo_mix == "convex":
                total = (1.0 - alpha) * total
            total = total + alpha * self.ppo_loss(policy_params, buf)
        return total

    # ---- the engine's configuration -------------------------------------------------------------
    def _act(self, params, obs, key, hp):
        dist = distributions.make("gaussian", self.policy.apply(params, obs)[0])
        raw = dist.sample(key)
        return dist.to_env(raw), raw, {"log_prob": dist.log_prob(raw), "obs": obs}

    def _mode(self, params, obs, hp):
        return distributions.make("gaussian", self.policy.apply(params, obs)[0]).mode()

    @staticmethod
    def _steps(tr: Transition) -> Buffer:
        to_nb = lambda x: jnp.swapaxes(x, 0, 1)  # [T, N] -> [N, T]  # noqa: E731
        return Buffer(obs=to_nb(tr.extras["obs"]), action=to_nb(tr.action),
                      reward=to_nb(tr.reward), terminated=to_nb(tr.terminated),
                      done=to_nb(tr.done), log_prob=to_nb(tr.extras["log_prob"]))

    def _push(self, params, tr: Transition, state: InnerState, hp) -> tuple[Buffer, InnerExtra]:
        """The batch is the buffer after the new steps pushed the oldest out."""
        r = self.config.rollout_length
        x: InnerExtra = state.extra
        buf = jax.tree.map(lambda old, new: jnp.concatenate([old[:, r:], new], 1), x.buffer,
                           self._steps(tr))
        ep = episode_stats(tr)
        return buf, InnerExtra(buffer=buf, return_sum=x.return_sum + ep["episode_return_sum"],
                               return_count=x.return_count + ep["episode_count"])

    def _loss(self, params, buf, key, hp, extra, loss_params, alpha):
        return self.total_loss(params, loss_params, buf, alpha), {}

    def act_deterministic(self, state: InnerState):
        return self.engine.act_deterministic(state)

    # ---- the lifetime ---------------------------------------------------------------------------
    def init(self, env: Env, key: jax.Array) -> InnerState:
        """A fresh agent whose buffer holds `buffer_size` steps of its initial policy."""
        state = self.engine.init(env, key, None)
        env_state, tr = self.engine.collect(env, state, state.key, self.config.buffer_size)
        stats = (obs_norm.update(state.obs_stats, tr.obs) if self.config.normalize_observations
                 else state.obs_stats)
        ep = episode_stats(tr)
        extra = InnerExtra(buffer=self._steps(tr), return_sum=ep["episode_return_sum"],
                           return_count=ep["episode_count"])
        return state.replace(obs_stats=stats, env_state=env_state, key=state.eval_key,
                             extra=extra)

    def update(self, env: Env, state: InnerState, loss_params: Any, alpha: jax.Array
               ) -> tuple[InnerState, dict]:
        """Roll out, push into the buffer, `sgd_steps` Adam steps on the total loss."""
        state, out = self.engine.update(env, state, loss_params, alpha)
        ep = episode_stats(out.traj)
        loss = out.aux["loss"]
        metrics = {"loss": loss[0], "loss_after": loss[-1],
                   "train_return": ep["episode_return_sum"] / jnp.maximum(ep["episode_count"], 1.0),
                   "episodes": ep["episode_count"]}
        return state, metrics

    def evaluate(self, env: Env, state: InnerState, key: jax.Array) -> jax.Array:
        """Mean return of `eval_envs` episodes of the deterministic (mean) policy."""
        return self.engine.evaluate(env, state, key, self.config.eval_envs)["eval_return"]

    def lifetime(self, loss_params: Any, task: jax.Array, key: jax.Array,
                 alpha: jax.Array | float = 0.0, updates: int | None = None
                 ) -> tuple[jax.Array, dict]:
        """One inner lifetime on `task`: (final eval return, per-update metrics [U])."""
        env = self.family.make_env(task)
        k_init, k_eval = jax.random.split(key)
        alpha = jnp.asarray(alpha, jnp.float32)
        state = self.init(env, k_init)
        state, metrics = jax.lax.scan(lambda s, _: self.update(env, s, loss_params, alpha), state,
                                      None, length=updates or self.config.inner_updates)
        return self.evaluate(env, state, k_eval), metrics

    def curve(self, loss_params: Any, task: jax.Array, key: jax.Array, updates: int,
              num_points: int, alpha: jax.Array | float = 0.0) -> dict:
        """Learning curve: eval return at update 0 and after every updates/(num_points-1) updates.

        Returns {"env_steps": [P], "eval_return": [P], "train_return": [U]} (env steps of
        the lifetime so far, evaluation episodes not counted).
        """
        c = self.config
        per = max(1, -(-updates // (num_points - 1)))
        env = self.family.make_env(task)
        k_init, k_eval = jax.random.split(key)
        alpha = jnp.asarray(alpha, jnp.float32)
        state = self.init(env, k_init)
        first = self.evaluate(env, state, jax.random.fold_in(k_eval, 0))

        def chunk(s, i):
            s, m = jax.lax.scan(lambda s, _: self.update(env, s, loss_params, alpha), s, None,
                                length=per)
            return s, (self.evaluate(env, s, jax.random.fold_in(k_eval, i + 1)), m["train_return"])

        _, (evals, train) = jax.lax.scan(chunk, state, jnp.arange(num_points - 1))
        steps = c.num_envs * (c.buffer_size + jnp.arange(num_points) * per * c.rollout_length)
        return {"env_steps": steps, "eval_return": jnp.concatenate([first[None], evals]),
                "train_return": train.reshape(-1)}


__all__ = ["Inner", "InnerState", "InnerExtra", "Buffer", "GaussianPolicy"]
