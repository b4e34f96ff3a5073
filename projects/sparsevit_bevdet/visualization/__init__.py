"""Figures of detector outputs: predicted and ground-truth 3D boxes on the cameras and in bird's-eye view."""
from .predictions import CAMERA_GRID, box_corners, plot_predictions, plot_sample_predictions, project_to_image

__all__ = ['CAMERA_GRID', 'box_corners', 'plot_predictions', 'plot_sample_predictions', 'project_to_image']
