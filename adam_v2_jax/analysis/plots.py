"""PNG figures of the analyses, after the paper's figures 3-6 (matplotlib, Agg backend).

Several models go side by side: one t-SNE panel per model, and box plots grouped by landmark,
part count or t with one box per model.
"""
import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import manifold  # noqa: E402

from adam_v2_jax.analysis import metrics  # noqa: E402

_DPI = 100


def tsne_2d(emb: np.ndarray, seed: int = 0, perplexity: float = 30.0,
            max_iter: int = 1000) -> np.ndarray:
  """float[N, 2] t-SNE of the L2-normalised embeddings (perplexity capped below N / 3).

  Small sets use the exact gradient: Barnes-Hut's threads cost more than they save there.
  """
  x = metrics.prepare(emb, None, True)
  n = len(x)
  if n < 3:
    return np.zeros((n, 2)) if n < 2 else np.array([[0.0, 0.0], [1.0, 0.0]])
  perp = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
  return manifold.TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed,
                       learning_rate="auto",
                       method="exact" if n <= 150 else "barnes_hut",
                       max_iter=max(250, max_iter)).fit_transform(x)


def _colors(n: int):
  cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
  return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=_DPI, bbox_inches="tight")
  plt.close(fig)
  return path


def plot_tsne_landmarks(models: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str],
                        path: str, seed: int = 0, max_iter: int = 1000) -> str:
  """Figure 3 (top): t-SNE of landmark patch embeddings, one panel per model, coloured by landmark.

  Args:
    models: {model name: (emb float[N, D] (the feature view to show), landmark int[N])}.
    names: landmark names, indexed by the labels.
  """
  cols = _colors(len(names))
  fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
  for ax, (model, (emb, lab)) in zip(axes[0], models.items()):
    xy = tsne_2d(emb, seed, max_iter=max_iter)
    for i, name in enumerate(names):
      m = lab == i
      if np.any(m):
        ax.scatter(xy[m, 0], xy[m, 1], s=8, color=cols[i], label=name)
    ax.set_title(model)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2)
  return _save(fig, path)


def plot_tsne_levels(models: dict[str, tuple], names: list[str], path: str,
                     max_patients: int = 10, seed: int = 0, max_iter: int = 1000) -> str:
  """Figure 4: per model (row) and landmark (column), t-SNE of its patches at levels 1-3.

  Points are coloured by patient and labelled with their level.

  Args:
    models: {model name: (emb float[N, D], landmark int[N], level int[N], patient int[N])}.
    names: landmark names indexed by the landmark labels.
  """
  first = next(iter(models.values()))
  lms = [int(v) for v in np.unique(first[1])]
  fig, axes = plt.subplots(len(models), len(lms), figsize=(3.2 * len(lms), 3.2 * len(models)),
                           squeeze=False)
  for r, (model, (emb, lm, lv, pt)) in enumerate(models.items()):
    keep_pt = np.unique(pt)[:max_patients]
    cols = _colors(len(keep_pt))
    for c, li in enumerate(lms):
      ax = axes[r][c]
      m = (lm == li) & np.isin(pt, keep_pt)
      xy = tsne_2d(emb[m], seed, max_iter=max_iter)
      for (x, y), p, level in zip(xy, pt[m], lv[m]):
        color = cols[int(np.searchsorted(keep_pt, p))]
        ax.scatter([x], [y], s=60, color=color, alpha=0.6)
        ax.annotate(str(int(level) + 1), (x, y), ha="center", va="center", fontsize=7)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(names[li], fontsize=9)
      if c == 0:
        ax.set_ylabel(model)
  fig.suptitle("levels 1-3 of each landmark; one colour per patient", fontsize=10)
  return _save(fig, path)


def grouped_boxplot(data: dict[str, dict[str, np.ndarray]], path: str, title: str, ylabel: str,
                    xlabel: str = "", ylim=None) -> str:
  """Box plots grouped by key, one box per model in each group (whiskers 1.5 IQR).

  Args:
    data: {model name: {group label: values float[n]}}; groups are taken in the first model's
      order.
  """
  groups = list(next(iter(data.values())).keys())
  n_models = len(data)
  width = 0.8 / n_models
  cols = _colors(n_models)
  fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(groups) * max(1, n_models / 2)), 4.0))
  for j, (model, by_group) in enumerate(data.items()):
    pos = np.arange(len(groups)) + (j - (n_models - 1) / 2) * width
    vals = [np.asarray(by_group.get(g, []), np.float64) for g in groups]
    bp = ax.boxplot(vals, positions=pos, widths=width * 0.9, patch_artist=True,
                    showfliers=True, flierprops=dict(markersize=2))
    for patch in bp["boxes"]:
      patch.set_facecolor(cols[j])
      patch.set_alpha(0.7)
    ax.plot([], [], color=cols[j], linewidth=8, alpha=0.7, label=model)
  ax.set_xticks(np.arange(len(groups)))
  ax.set_xticklabels(groups, rotation=30 if max(len(str(g)) for g in groups) > 6 else 0,
                     ha="right" if max(len(str(g)) for g in groups) > 6 else "center")
  ax.set_xlim(-0.6, len(groups) - 0.4)
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.set_title(title)
  ax.set_ylabel(ylabel)
  if xlabel:
    ax.set_xlabel(xlabel)
  ax.legend(fontsize=8, loc="best")
  ax.grid(axis="y", alpha=0.3)
  return _save(fig, path)


def plot_interp_extrap(models: dict[str, dict], path: str) -> str:
  """Figure 6: cosine(E', E) box plots for interpolation (t1) and extrapolation (t2), side by side.

  Args:
    models: {model name: {"interpolation": {t: float[n]}, "extrapolation": {t: float[n]}}}.
  """
  n_models = len(models)
  width = 0.8 / n_models
  cols = _colors(n_models)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  for ax, kind, sym in zip(axes, ("interpolation", "extrapolation"), ("t1", "t2")):
    ts = list(next(iter(models.values()))[kind].keys())
    for j, (model, d) in enumerate(models.items()):
      pos = np.arange(len(ts)) + (j - (n_models - 1) / 2) * width
      bp = ax.boxplot([np.asarray(d[kind][t]) for t in ts], positions=pos, widths=width * 0.9,
                      patch_artist=True, flierprops=dict(markersize=2))
      for patch in bp["boxes"]:
        patch.set_facecolor(cols[j])
        patch.set_alpha(0.7)
      ax.plot([], [], color=cols[j], linewidth=8, alpha=0.7, label=model)
    ax.set_xticks(np.arange(len(ts)))
    ax.set_xticklabels([f"{sym}={t}" for t in ts])
    ax.set_xlim(-0.6, len(ts) - 0.4)
    ax.set_title(kind)
    ax.grid(axis="y", alpha=0.3)
  axes[0].set_ylabel("cosine similarity (E' vs E)")
  axes[1].legend(fontsize=8, loc="best")
  return _save(fig, path)
