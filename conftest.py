# Shared fixtures live in tests/harness; each module is registered here.
from hypothesis import settings as _hypothesis_settings

pytest_plugins: list[str] = ["tests.harness.api_fixtures", "tests.harness.netns"]

# Shared 2-core machines: timing-based deadlines only produce flakes there.
_hypothesis_settings.register_profile("pyroute2-cni", deadline=None)
_hypothesis_settings.load_profile("pyroute2-cni")
