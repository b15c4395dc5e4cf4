#include "rbuild_child.h"
int rb_placeholder(void) { return 0; }
