"""Reports of what agent-pay measured: PNG plots (`plots`) and a self-contained HTML page
(`html`). matplotlib is imported only when a plot is drawn."""
