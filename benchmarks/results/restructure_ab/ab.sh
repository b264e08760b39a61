for i in 1 2 3; do
  for side in base now; do
    if [ $side = base ]; then d=/work/wt-base; else d=/work/ci; fi
    cd $d && PYTHONPATH=. /work/main/.venv/bin/python benchmarks/throughput.py --models dcnv2 dnn --sharding table_wise --world-sizes 1 --batch-sizes 4096 --variants fused --windows 5 --window-seconds 2 --out /tmp/ab13/${side}$i 2>&1 | grep -E "fused (dcnv2|dnn)" | sed "s/^/$side$i /"
  done
done
