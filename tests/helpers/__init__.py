"""What the tests share: small models and data, devices, warning filters. Import as ``tests.helpers.X``."""
