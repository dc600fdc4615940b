"""Visualisation: plots of optical–SAR samples (``edc_lab.viz.plots``)."""

from edc_lab.viz.plots import false_color, label_rgb, legend_handles, plot_sample, rgb, stretch, to_numpy

__all__ = ["false_color", "label_rgb", "legend_handles", "plot_sample", "rgb", "stretch", "to_numpy"]
