import sys

from .cli import honour_interrupts, main

honour_interrupts()
sys.exit(main())
