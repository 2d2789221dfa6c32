"""Meshes, placement and the shard_map / pmap gradient conventions, on 8 virtual CPU devices."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from invariance import parallel

N_DEV = 8


def test_data_mesh():
  mesh = parallel.data_mesh()
  assert mesh.axis_names == ("data",) and mesh.shape["data"] == N_DEV
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  assert parallel.data_mesh(jax.devices()[:2]).shape["data"] == 2
  with pytest.raises(ValueError, match="devices"):
    parallel.data_mesh([])


def test_shard_batch_and_replicate():
  mesh = parallel.data_mesh()
  batch = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "y": np.arange(16)}
  sharded = parallel.shard_batch(batch, mesh)
  assert sharded["x"].sharding.spec == P("data")
  assert {s.data.shape for s in sharded["x"].addressable_shards} == {(2, 3)}
  chex.assert_trees_all_equal(jax.device_get(sharded), batch)
  replicated = parallel.replicate({"w": np.ones(3)}, mesh)
  assert replicated["w"].sharding.is_fully_replicated
  with pytest.raises(ValueError, match="divisible"):
    parallel.shard_batch(np.zeros((12, 3)), mesh)


def test_pmap_shard():
  tree = (np.arange(32).reshape(16, 2), np.arange(16))
  out = parallel.pmap_shard(tree, N_DEV)
  chex.assert_shape(out, [(N_DEV, 2, 2), (N_DEV, 2)])
  np.testing.assert_array_equal(out[1][3], [6, 7])
  with pytest.raises(ValueError, match="divisible"):
    parallel.pmap_shard(np.zeros((10,)), N_DEV)


# A per-device loss with the same structure as the contrastive ones: local rows against gathered
# rows, a replicated parameter, a psum of partial sums. Single device: sum_ij w (x_i . y_j)^2 / B.
def _toy_loss(x_bD, y_bD, w, axis_name=None):
  y_all = y_bD if axis_name is None else lax.all_gather(y_bD, axis_name, tiled=True)
  partial = w * jnp.sum((x_bD @ y_all.T) ** 2)
  if axis_name is None:
    return partial / x_bD.shape[0]
  return lax.psum(partial, axis_name) / (x_bD.shape[0] * lax.axis_size(axis_name))


def _data():
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.normal(size=(16, 4)), jnp.float32),
          jnp.asarray(rng.normal(size=(16, 4)), jnp.float32), jnp.float32(0.7))


def _reference():
  return jax.value_and_grad(_toy_loss, (0, 1, 2))(*_data())


def test_shard_map_grad_outside_and_inside():
  mesh = parallel.data_mesh()
  outside = jax.jit(jax.value_and_grad(parallel.shard_map_loss(_toy_loss, mesh), (0, 1, 2)))
  chex.assert_trees_all_close(outside(*_data()), _reference(), rtol=1e-5)

  def per_device(x, y, w):  # differentiate inside the shard_map (as a train step would)
    return jax.value_and_grad(_toy_loss, (0, 1, 2))(x, y, w, axis_name="data")

  inside = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P("data"), P()),
                                 out_specs=(P(), (P("data"), P("data"), P()))))
  chex.assert_trees_all_close(inside(*_data()), _reference(), rtol=1e-5)


def test_pmap_loss_and_value_and_grad():
  x, y, w = _data()
  loss_D = parallel.pmap_loss(_toy_loss)(*parallel.pmap_shard((x, y), N_DEV), w)
  np.testing.assert_allclose(loss_D, np.full(N_DEV, _reference()[0]), rtol=1e-5)

  loss_D, (gx, gy, gw) = parallel.pmap_value_and_grad(_toy_loss, argnums=(0, 1, 2))(
      *parallel.pmap_shard((x, y), N_DEV), w)
  want_loss, (want_gx, want_gy, want_gw) = _reference()
  chex.assert_trees_all_close((loss_D, gx.reshape(x.shape), gy.reshape(y.shape), gw),
                              (np.full(N_DEV, want_loss), want_gx, want_gy,
                               np.full(N_DEV, want_gw)), rtol=1e-5)


def test_control_raw_pmap_grad_is_d_times_too_large():
  """Why pmap_value_and_grad divides: pmap differentiates every device's copy of the loss."""
  x, y, w = _data()
  raw = jax.pmap(jax.grad(lambda x, y, w: _toy_loss(x, y, w, "data")), axis_name="data",
                 in_axes=(0, 0, None))
  gx = raw(*parallel.pmap_shard((x, y), N_DEV), w).reshape(x.shape)
  np.testing.assert_allclose(gx, N_DEV * _reference()[1][0], rtol=1e-5)


def test_initialize_distributed_forwards_arguments(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  parallel.initialize_distributed()
  parallel.initialize_distributed("10.0.0.1:1234", num_processes=2, process_id=1)
  assert calls == [{}, dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)]


def test_process_info():
  assert parallel.process_info() == dict(process_index=0, process_count=1,
                                         local_device_count=N_DEV, device_count=N_DEV)
