"""Pictures: ``plots`` holds pure render functions, ``widgets`` wires sliders to them."""
