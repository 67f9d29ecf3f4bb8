"""Zero-shot anatomy analyses of a frozen backbone (paper section 4.1, SPEC 6).

numpy/sklearn/matplotlib only; the model enters as a function `embed(uint8[N,H,W,C]) -> float[N,D]`.

  cases.py     annotated images: the phantom's, or a CSV of (image, landmark, x, y)
  patches.py   crops and geometry: landmark patches, wholes split into parts, point triples
  metrics.py   the figures, as functions of embeddings
  analyses.py  the four analyses of one embed function over a set of cases
  plots.py     t-SNE and box plots (the paper's figures 3-6) as PNG
  report.py    metrics.json and report.md
"""
