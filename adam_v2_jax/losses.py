"""The three Adam-v2 losses and the teacher-center update (SPEC 4). Plain jnp, float32 throughout.

Shapes: V views, B anchors, K head outputs, D backbone features, n parts.
"""
import jax
import jax.numpy as jnp


def localizability_loss(student_logits, teacher_logits, center, student_temp, teacher_temp,
                        skip_same_view):
  """DINO cross-entropy between teacher and student views.

  Args:
    student_logits: [Vs, B, K] student h_L outputs.
    teacher_logits: [Vt, B, K] teacher h_L outputs (no gradient flows into them).
    center: [K] running center of the teacher logits.
    student_temp, teacher_temp: softmax temperatures (tau_s, tau_t; may be traced scalars).
    skip_same_view: drop the pairs (teacher view i, student view i) (stage L, where both
      see the same two global crops first).
  Returns:
    float32 scalar: the mean over the (teacher, student) view pairs of the batch mean of
    sum_k -q_k log p_k.
  """
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temp, axis=-1)
  t = (teacher_logits.astype(jnp.float32) - center) / teacher_temp
  q = jax.lax.stop_gradient(jax.nn.softmax(t, axis=-1))
  # ce[i, j, b] = cross-entropy of teacher view i against student view j.
  ce = -jnp.einsum("ibk,jbk->ijb", q, s)
  vt, vs = q.shape[0], s.shape[0]
  pair = jnp.ones((vt, vs), jnp.float32)
  if skip_same_view:
    pair = pair * (1.0 - jnp.eye(vt, vs, dtype=jnp.float32))
  return jnp.sum(ce.mean(axis=-1) * pair) / jnp.sum(pair)


def update_center(center, teacher_logits, momentum):
  """c <- m c + (1 - m) mean(teacher logits over all views and the whole (global) batch).

  Args:
    center: [K]. teacher_logits: [..., K] (any leading view/batch axes). momentum: scalar.
  Returns: float32[K]. Under jit with a batch-sharded input the mean is over the global batch.
  """
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  batch_center = t.reshape(-1, t.shape[-1]).mean(axis=0)
  return center * momentum + batch_center * (1.0 - momentum)


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(||x||, eps) in float32 (torch.nn.functional.normalize semantics)."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def composability_loss(composed, teacher_whole):
  """MSE(normalize(composed), normalize(teacher_whole)), the mean over elements.

  Args:
    composed: [B, D] h_C of the concatenated student part features.
    teacher_whole: [B, D] teacher backbone features of x0 (no gradient).
  """
  target = jax.lax.stop_gradient(l2_normalize(teacher_whole))
  return jnp.mean((l2_normalize(composed) - target) ** 2)


def decomposability_loss(decomposed, teacher_parts, normalize="per_part"):
  """Mean over parts of MSE(Z_i, normalize(teacher part i)).

  Args:
    decomposed: [B, n*D] h_D of the student features of x0; slice i is part i.
    teacher_parts: [n, B, D] teacher backbone features of the parts (no gradient).
    normalize: 'per_part' normalises each D-slice of Z (default); 'joint' normalises the whole
      n*D vector as the released code does (each slice then has norm about 1/sqrt(n)).
  """
  n, b, d = teacher_parts.shape
  if normalize == "per_part":
    z = l2_normalize(decomposed.reshape(b, n, d))
  elif normalize == "joint":
    z = l2_normalize(decomposed).reshape(b, n, d)
  else:
    raise ValueError(f"decompose normalize must be 'per_part' or 'joint', got {normalize!r}")
  target = jax.lax.stop_gradient(l2_normalize(teacher_parts))  # [n, B, D]
  return jnp.mean((jnp.transpose(z, (1, 0, 2)) - target) ** 2)


def entropy(logits, center, temp):
  """Mean entropy (nats) of softmax((logits - center) / temp) over leading axes: a collapse watch.

  logits: [..., K]. Uniform output gives ln K; a one-hot output gives 0."""
  logp = jax.nn.log_softmax((logits.astype(jnp.float32) - center) / temp, axis=-1)
  return -jnp.mean(jnp.sum(jnp.exp(logp) * logp, axis=-1))
