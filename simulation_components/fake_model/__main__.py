"""Entry point: ``python -m simulation_components.fake_model`` (the fake model's container command)."""

from simulation_components.fake_model import main

if __name__ == "__main__":
    main()
