"""The benchmark scenarios and the models they deploy."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IMAGE", "SCENARIOS", "SIMULATOR_ID", "SO", "Scenario", "custom", "model_env"]

SO = "dots-so"
SIMULATOR_ID = "so01"
IMAGE = "dots/fake-model:latest"  # never run: the API server's kubelet is status-only


@dataclass(frozen=True)
class Scenario:
    name: str
    simulations: int
    models_per_simulation: int
    idle_seconds: float  # how long the API requests of the idle daemon are counted
    timeout_seconds: float  # the whole run (ceiling excluded) stops with an error after this

    @property
    def models(self) -> int:
        return self.simulations * self.models_per_simulation

    def simulation_ids(self) -> list[str]:
        if self.simulations == 1:
            return [f"bench{self.models_per_simulation}"]
        return [f"bench{self.models_per_simulation}-s{index:03d}" for index in range(self.simulations)]

    def model_ids(self) -> list[str]:
        return [f"m{index:05d}" for index in range(self.models_per_simulation)]

    def describe(self) -> str:
        if self.simulations == 1:
            return f"1 simulation of {self.models_per_simulation:,} models"
        return f"{self.simulations} simulations of {self.models_per_simulation:,} models deployed at once"


SCENARIOS: dict[str, Scenario] = {
    "1000": Scenario("1000", 1, 1000, idle_seconds=30, timeout_seconds=300),
    "10000": Scenario("10000", 1, 10000, idle_seconds=60, timeout_seconds=900),
    "50x40": Scenario("50x40", 50, 40, idle_seconds=30, timeout_seconds=300),
}


def custom(simulations: int, models_per_simulation: int, idle_seconds: float = 10) -> Scenario:
    """A scenario of any size (the smoke test's 1 x 50, or a quick look at another shape)."""
    timeout = 120 + 0.1 * simulations * models_per_simulation
    return Scenario(f"{simulations}x{models_per_simulation}", simulations, models_per_simulation,
                    idle_seconds=idle_seconds, timeout_seconds=timeout)


def model_env(simulation_id: str, model_id: str) -> list[tuple[str, str]]:
    """What the DOTS SO gives each model: broker and database coordinates, ids, two passwords."""
    return [
        ("MQTT_HOST", "mosquitto"), ("MQTT_PORT", "1883"), ("MQTT_QOS", "0"), ("MQTT_USERNAME", "dots"),
        ("MQTT_PASSWORD", "bench-mqtt-password"), ("SIMULATOR_ID", SIMULATOR_ID),
        ("SIMULATION_ID", simulation_id), ("MODEL_ID", model_id), ("INFLUXDB_HOST", "influxdb"),
        ("INFLUXDB_PORT", "8086"), ("INFLUXDB_USER", "dots"), ("INFLUXDB_PASSWORD", "bench-influx-password"),
        ("INFLUXDB_NAME", "dots"),
    ]
