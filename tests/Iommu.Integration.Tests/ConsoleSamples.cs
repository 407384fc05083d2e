namespace Iommu.Integration.Tests;

/// <summary>Tests that run a sample's entry point in-process and capture <see cref="Console.Out"/>: never in parallel with each other.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ConsoleSamples
{
    public const string Name = "Console output";

    /// <summary>Runs the entry point of the sample assembly <paramref name="assembly"/> with <paramref name="args"/>, capturing its output.</summary>
    public static (int Exit, string Output) RunSample(string assembly, params string[] args)
    {
        var output = new StringWriter();
        TextWriter original = Console.Out;
        try
        {
            Console.SetOut(output);
            System.Reflection.MethodInfo main = System.Reflection.Assembly.Load(assembly).EntryPoint!;
            int exit = (int)main.Invoke(null, [args])!;
            return (exit, output.ToString());
        }
        finally
        {
            Console.SetOut(original);
        }
    }
}
