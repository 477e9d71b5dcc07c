#include "miner.h"
