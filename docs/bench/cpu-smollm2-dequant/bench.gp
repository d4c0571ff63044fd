# made by tpserve bench: gnuplot bench.gp (in this folder) draws bench.png from bench.dat
set terminal pngcairo size 1200,520 font ',10' noenhanced
set output 'bench.png'
array B[3] = [1, 8, 32]
set multiplot layout 1,2 title 'SmolLM2-135M-Instruct.Q4_1.gguf on cpu: measured (dashed: the cost model)'
set grid
set key below
set xlabel 'ranks'
set logscale x 2
set xtics (1, 2, 4, 8, 16)
set ylabel 'decode tokens/s'
plot for [i=1:3] 'bench.dat' index i-1 using 1:2 with linespoints lw 2 pt 7 lc i title sprintf('batch %d', B[i]), for [i=1:3] 'bench.dat' index i-1 using 1:3 with linespoints dt 2 pt 6 lc i title sprintf('batch %d predicted', B[i])
set ylabel 'efficiency (speedup / ranks)'
set yrange [0:1.2]
plot for [i=1:3] 'bench.dat' index i-1 using 1:4 with linespoints lw 2 pt 7 lc i title sprintf('batch %d', B[i]), for [i=1:3] 'bench.dat' index i-1 using 1:5 with linespoints dt 2 pt 6 lc i title sprintf('batch %d predicted', B[i])
unset multiplot
