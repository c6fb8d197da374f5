"""Entry point: ``python -m simulation_components.fake_simulator`` (the fake SO)."""

from simulation_components.fake_simulator import main

if __name__ == "__main__":
    main()
