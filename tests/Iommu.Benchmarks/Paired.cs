using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;

namespace Iommu.Benchmarks;

/// <summary>
/// <c>--paired N</c>: each C# row that has a C row is timed against it in one process (one per class), the two
/// invocations alternating N times with the rows' own global and iteration setups, by the thread's
/// CPU time (what another process on a busy machine takes from the wall clock is not counted). The
/// ratio is the median of the N pairs' ratios, so a slow stretch of the machine slows both halves of
/// a pair. A check beside BenchmarkDotNet, whose rows run in separate processes one after another.
/// </summary>
internal static class Paired
{
    /// <summary>Prints the table header the rows of <see cref="Run"/> go under.</summary>
    public static void PrintHeader(int rounds)
    {
        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| Paired ({rounds} pairs, thread CPU time) | ns/op | C floor ns/op | ratio (median of pairs) |"));
        Console.WriteLine("|---|---|---|---|");
    }

    /// <summary>The benchmark classes with at least one row that matches <paramref name="filters"/> and has a C row, by name.</summary>
    public static IEnumerable<string> Classes(IReadOnlyList<string> filters, Func<string, string, string?> floorOf) =>
        Rows(filters, floorOf).Select(r => r.Type.Name).Distinct();

    /// <summary>Runs every C#/C pair of class <paramref name="typeName"/> whose row names contain one of <paramref name="filters"/> (all when empty).</summary>
    public static void Run(int rounds, IReadOnlyList<string> filters, Func<string, string, string?> floorOf, bool tiered, string typeName)
    {
        foreach ((Type type, MethodInfo method, Type floorType, MethodInfo floorMethod) in Rows(filters, floorOf).Where(r => r.Type.Name == typeName))
        {
            string row = $"{type.Name}.{method.Name}";
            using var mine = new Subject(type, method);
            using var theirs = new Subject(floorType, floorMethod);
            if (tiered)
            {
                // Default runtime settings: run both until the hot methods are rejitted at tier 1
                // with their dynamic profile (30 calls, then a background compile after 100 ms of
                // no new tier-0 code).
                for (int w = 0; w < 4; w++)
                {
                    for (int i = 0; i < 40; i++)
                    {
                        mine.Time();
                        theirs.Time();
                    }

                    Thread.Sleep(300);
                }
            }

            var ns = new List<double>();
            var cns = new List<double>();
            var ratios = new List<double>();
            for (int r = 0; r < rounds; r++)
            {
                double a, b;
                if (r % 2 == 0)
                {
                    a = mine.Time();
                    b = theirs.Time();
                }
                else
                {
                    b = theirs.Time();
                    a = mine.Time();
                }

                ns.Add(a);
                cns.Add(b);
                ratios.Add(a / b);
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {row} | {Median(ns):F1} | {Median(cns):F1} | {Median(ratios):F2} |"));
        }
    }

    // Every C# row with a C row, classes by name: (class, row, floor class, floor row).
    private static IEnumerable<(Type Type, MethodInfo Method, Type FloorType, MethodInfo FloorMethod)> Rows(IReadOnlyList<string> filters, Func<string, string, string?> floorOf)
    {
        foreach (Type type in typeof(Paired).Assembly.GetTypes().Where(t => t is { IsAbstract: false, IsPublic: true }).OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            foreach (MethodInfo method in Benchmarks(type))
            {
                string row = $"{type.Name}.{method.Name}";
                if ((filters.Count > 0 && !filters.Any(f => row.Contains(f, StringComparison.Ordinal))) || floorOf(type.Name, method.Name) is not string floor)
                {
                    continue;
                }

                string[] parts = floor.Split('.');
                Type floorType = type.Assembly.GetTypes().Single(t => t.Name == parts[0]);
                if (floorType.GetMethod(parts[1]) is MethodInfo floorMethod)
                {
                    yield return (type, method, floorType, floorMethod);
                }
            }
        }
    }

    private static IEnumerable<MethodInfo> Benchmarks(Type type) =>
        type.GetMethods(BindingFlags.Public | BindingFlags.Instance).Where(m => m.GetCustomAttribute<BenchmarkAttribute>() is not null);

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    // One row on its own instance: its global setup once, then per timed invocation its iteration
    // setup and cleanup (untimed), as BenchmarkDotNet runs it.
    private sealed class Subject : IDisposable
    {
        private readonly object _instance;
        private readonly Action? _action;
        private readonly Func<ulong>? _func;
        private readonly MethodInfo[] _setups;
        private readonly MethodInfo[] _cleanups;
        private readonly int _ops;

        public Subject(Type type, MethodInfo method)
        {
            _instance = Activator.CreateInstance(type)!;
            if (method.ReturnType == typeof(ulong))
            {
                _func = method.CreateDelegate<Func<ulong>>(_instance);
            }
            else
            {
                _action = method.CreateDelegate<Action>(_instance);
            }

            _ops = method.GetCustomAttribute<BenchmarkAttribute>()!.OperationsPerInvoke;
            MethodInfo[] all = type.GetMethods(BindingFlags.Public | BindingFlags.Instance);
            MethodInfo? global = all.FirstOrDefault(m => m.GetCustomAttribute<GlobalSetupAttribute>() is { } a && a.Targets.Contains(method.Name))
                ?? all.FirstOrDefault(m => m.GetCustomAttribute<GlobalSetupAttribute>() is { } a && a.Targets.Length == 0);
            global?.Invoke(_instance, null);
            _setups = [.. all.Where(m => m.GetCustomAttribute<IterationSetupAttribute>() is { } a && (a.Targets.Length == 0 || a.Targets.Contains(method.Name)))];
            _cleanups = [.. all.Where(m => m.GetCustomAttribute<IterationCleanupAttribute>() is { } a && (a.Targets.Length == 0 || a.Targets.Contains(method.Name)))];
            Time(); // warm-up: jitted code, tables and the C floor in place
        }

        /// <summary>One invocation's thread CPU time per operation, in ns.</summary>
        public double Time()
        {
            foreach (MethodInfo s in _setups)
            {
                s.Invoke(_instance, null);
            }

            ulong sink = 0;
            long t0 = ThreadCpuNs();
            if (_func is not null)
            {
                sink = _func();
            }
            else
            {
                _action!();
            }

            long t1 = ThreadCpuNs();
            GC.KeepAlive(sink);
            foreach (MethodInfo c in _cleanups)
            {
                c.Invoke(_instance, null);
            }

            return (double)(t1 - t0) / _ops;
        }

        public void Dispose() => (_instance as IDisposable)?.Dispose();
    }

    private static unsafe long ThreadCpuNs()
    {
        const int ClockThreadCputimeId = 3;
        Timespec ts;
        return ClockGettime(ClockThreadCputimeId, &ts) == 0 ? (ts.Sec * 1_000_000_000) + ts.Nsec : throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern unsafe int ClockGettime(int clock, Timespec* ts);

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Sec;
        public long Nsec;
    }
}
