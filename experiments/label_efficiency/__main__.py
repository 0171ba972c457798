"""python -m experiments.label_efficiency"""

from experiments.label_efficiency.study import main

main()
