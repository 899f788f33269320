"""Settings for the whole suite."""

from hypothesis import HealthCheck, settings

# A loaded 2-core CI machine must not turn slow examples into failures: the
# properties are about behaviour, not speed (bench/ measures speed).
settings.register_profile(
    "aiobfd", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("aiobfd")
