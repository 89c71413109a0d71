"""Per-target TIR schedule rules (dlight-style), applied after Relax fusion."""
