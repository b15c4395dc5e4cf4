#pragma once
int rb_placeholder(void);
