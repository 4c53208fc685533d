"""The demo: the whole product on local services in one command (`featurestore demo`,
`make demo`)."""

from featurestore.demo.run import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
