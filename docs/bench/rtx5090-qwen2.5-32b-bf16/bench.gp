# made by tpserve bench: gnuplot bench.gp (in this folder) draws bench.png from bench.dat
set terminal pngcairo size 1200,520 font ',10' noenhanced
set output 'bench.png'
array B[3] = [1, 8, 32]
set multiplot layout 1,2 title 'qwen2.5-32b on 4xrtx5090: predicted (dashed: the cost model; nothing measured)'
set grid
set key below
set xlabel 'ranks'
set logscale x 2
set xtics (1, 2, 4, 8, 16)
set ylabel 'decode tokens/s'
plot for [i=1:3] 'bench.dat' index i-1 using 1:3 with linespoints dt 2 pt 6 lc i title sprintf('batch %d predicted', B[i])
set ylabel 'efficiency (speedup / ranks)'
set yrange [0:1.2]
plot for [i=1:3] 'bench.dat' index i-1 using 1:5 with linespoints dt 2 pt 6 lc i title sprintf('batch %d predicted', B[i])
unset multiplot
