"""What the model is: nn.Modules and their configs only (no file or network I/O)."""
