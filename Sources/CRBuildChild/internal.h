// Shared by the C files of this target only (not imported by Swift).
#pragma once

/// Every signal back to its default action and none blocked: what a program execve'd by a
/// child expects (async-signal-safe; used by the sandbox's child and the network helper's).
void rb_reset_signals(void);
