# Shared fixtures live in tests/harness; each module is registered here.
pytest_plugins: list[str] = ["tests.harness.api_fixtures", "tests.harness.netns"]
