"""odeon-job: train semantic-segmentation models on GeoTIFF tiles, as a cloud-native batch job."""

__version__ = "0.1.0"
