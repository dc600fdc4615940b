"""edc_lab: learn, inspect and train EDC (discrepancy-conditioned optical–SAR fusion).

Subpackages: ``edc_lab.data`` (scenes, clouds, readers, datasets, transforms),
``edc_lab.models`` (blocks and ``build_model``), ``edc_lab.train`` (losses,
metrics, loop), ``edc_lab.viz`` (plots and widgets).
"""

__version__ = "0.1.0"
